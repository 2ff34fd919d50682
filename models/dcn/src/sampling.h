// Bilinear sampling arithmetic of deformable convolution v1, shared by the CPU and the CUDA code so
// that the CPU tests cover the arithmetic the GPU kernels run. Semantics follow
// torchvision.ops.deform_conv2d: a pixel outside the image reads as zero.
#pragma once

#include <cmath>
#include <cstdint>

// Under nvcc every helper is compiled for both the host and the device; the C++ build sees plain
// inline functions, so the CPU tests exercise the same arithmetic.
#if defined(__CUDACC__)
#define DCN_HOST_DEVICE __host__ __device__ __forceinline__
#define DCN_UNROLL _Pragma("unroll")
#else
#define DCN_HOST_DEVICE inline
#define DCN_UNROLL
#endif

namespace wnet_dcn {

// Sizes of one deformable convolution: input plane, output plane, kernel and sliding pattern.
struct Geometry {
  int64_t channels;
  int64_t height;
  int64_t width;
  int64_t out_height;
  int64_t out_width;
  int64_t kernel_h;
  int64_t kernel_w;
  int64_t stride_h;
  int64_t stride_w;
  int64_t pad_h;
  int64_t pad_w;
  int64_t dilation_h;
  int64_t dilation_w;
  int64_t deformable_groups;

  DCN_HOST_DEVICE int64_t taps() const { return kernel_h * kernel_w; }
  DCN_HOST_DEVICE int64_t positions() const { return out_height * out_width; }
  DCN_HOST_DEVICE int64_t plane_size() const { return height * width; }
  DCN_HOST_DEVICE int64_t channels_per_deformable_group() const { return channels / deformable_groups; }
};

constexpr int kCorners = 4;
constexpr int kOutsideImage = -1;

// The four pixels around a sampling point, in the order (top, left), (top, right), (bottom, left),
// (bottom, right). A pixel outside the image has index kOutsideImage and zero weights.
template <typename scalar_t>
struct Corners {
  int32_t index[kCorners];       // y * width + x within one image plane
  scalar_t weight[kCorners];     // bilinear weight of each pixel
  scalar_t weight_dy[kCorners];  // derivative of the weight with respect to the sampling row
  scalar_t weight_dx[kCorners];  // derivative of the weight with respect to the sampling column
};

template <typename scalar_t>
DCN_HOST_DEVICE scalar_t floor_of(scalar_t value) {
#if defined(__CUDA_ARCH__)
  return floor(value);
#else
  return std::floor(value);
#endif
}

// Where kernel tap (tap_y, tap_x) of output pixel (out_y, out_x) samples, moved by its offset.
template <typename scalar_t>
DCN_HOST_DEVICE void sampling_point(const Geometry& g, int64_t out_y, int64_t out_x, int64_t tap_y,
                                    int64_t tap_x, scalar_t offset_y, scalar_t offset_x, scalar_t* y,
                                    scalar_t* x) {
  *y = static_cast<scalar_t>(out_y * g.stride_h - g.pad_h + tap_y * g.dilation_h) + offset_y;
  *x = static_cast<scalar_t>(out_x * g.stride_w - g.pad_w + tap_x * g.dilation_w) + offset_x;
}

template <typename scalar_t>
DCN_HOST_DEVICE void set_corner(Corners<scalar_t>* c, int k, int64_t row, int64_t col, int64_t height,
                                int64_t width, scalar_t weight, scalar_t weight_dy, scalar_t weight_dx) {
  const bool inside = row >= 0 && row < height && col >= 0 && col < width;
  c->index[k] = inside ? static_cast<int32_t>(row * width + col) : kOutsideImage;
  c->weight[k] = inside ? weight : scalar_t(0);
  c->weight_dy[k] = inside ? weight_dy : scalar_t(0);
  c->weight_dx[k] = inside ? weight_dx : scalar_t(0);
}

// Bilinear corners of the point (y, x) in a height x width plane.
template <typename scalar_t>
DCN_HOST_DEVICE Corners<scalar_t> bilinear_corners(scalar_t y, scalar_t x, int64_t height, int64_t width) {
  Corners<scalar_t> c;
  // Farther than one pixel outside (or NaN), every corner is outside; this also keeps the integer
  // conversion below in range for huge offsets.
  if (!(y >= -1 && y <= height && x >= -1 && x <= width)) {
    for (int k = 0; k < kCorners; ++k) {
      c.index[k] = kOutsideImage;
      c.weight[k] = c.weight_dy[k] = c.weight_dx[k] = 0;
    }
    return c;
  }
  const scalar_t top_f = floor_of(y);
  const scalar_t left_f = floor_of(x);
  const int64_t top = static_cast<int64_t>(top_f);
  const int64_t left = static_cast<int64_t>(left_f);
  const scalar_t frac_y = y - top_f;  // weight of the bottom row
  const scalar_t frac_x = x - left_f;  // weight of the right column
  const scalar_t rest_y = 1 - frac_y;
  const scalar_t rest_x = 1 - frac_x;
  set_corner(&c, 0, top, left, height, width, rest_y * rest_x, -rest_x, -rest_y);
  set_corner(&c, 1, top, left + 1, height, width, rest_y * frac_x, -frac_x, rest_y);
  set_corner(&c, 2, top + 1, left, height, width, frac_y * rest_x, rest_x, -frac_y);
  set_corner(&c, 3, top + 1, left + 1, height, width, frac_y * frac_x, frac_x, frac_y);
  return c;
}

// The bilinearly interpolated value of one plane.
template <typename scalar_t>
DCN_HOST_DEVICE scalar_t interpolate(const scalar_t* plane, const Corners<scalar_t>& c) {
  scalar_t value = 0;
DCN_UNROLL
  for (int k = 0; k < kCorners; ++k) {
    if (c.index[k] != kOutsideImage) value += c.weight[k] * plane[c.index[k]];
  }
  return value;
}

// The interpolated value and its derivatives with respect to the sampling point (y, x).
template <typename scalar_t>
DCN_HOST_DEVICE void interpolate_with_gradient(const scalar_t* plane, const Corners<scalar_t>& c,
                                               scalar_t* value, scalar_t* d_y, scalar_t* d_x) {
  scalar_t v = 0, gy = 0, gx = 0;
DCN_UNROLL
  for (int k = 0; k < kCorners; ++k) {
    if (c.index[k] != kOutsideImage) {
      const scalar_t pixel = plane[c.index[k]];
      v += c.weight[k] * pixel;
      gy += c.weight_dy[k] * pixel;
      gx += c.weight_dx[k] * pixel;
    }
  }
  *value = v;
  *d_y = gy;
  *d_x = gx;
}

// Offset channels of (deformable group, tap): row displacement at 2 * group_tap, column at + 1.
DCN_HOST_DEVICE int64_t offset_row_channel(int64_t group_tap) { return 2 * group_tap; }
DCN_HOST_DEVICE int64_t offset_col_channel(int64_t group_tap) { return 2 * group_tap + 1; }

}  // namespace wnet_dcn
