// CUDA gathers and scatters of deformable convolution v1 for one image. The bilinear arithmetic is
// the __host__ __device__ code of sampling.h, which the CPU build and its tests share.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "deform_conv.h"

namespace wnet_dcn {
namespace {

constexpr int kThreadsPerBlock = 256;
// The kernels loop with a grid stride, so the grid can stay below the hardware limit.
constexpr int64_t kMaxBlocks = 65536;

unsigned int blocks_for(int64_t work) {
  return static_cast<unsigned int>(std::min((work + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks));
}

template <typename scalar_t>
__device__ Corners<scalar_t> corners_at(const Geometry& g, const scalar_t* offset, int64_t group, int64_t tap,
                                        int64_t position) {
  const int64_t group_tap = group * g.taps() + tap;
  const scalar_t offset_y = offset[offset_row_channel(group_tap) * g.positions() + position];
  const scalar_t offset_x = offset[offset_col_channel(group_tap) * g.positions() + position];
  scalar_t y, x;
  sampling_point(g, position / g.out_width, position % g.out_width, tap / g.kernel_w, tap % g.kernel_w,
                 offset_y, offset_x, &y, &x);
  return bilinear_corners(y, x, g.height, g.width);
}

// One thread per (channel, position); it walks the taps. Consecutive threads write consecutive columns.
template <typename scalar_t>
__global__ void im2col_kernel(const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
                              const Geometry g, scalar_t* __restrict__ columns) {
  const int64_t total = g.channels * g.positions();
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t c = index / g.positions();
    const int64_t p = index % g.positions();
    const int64_t group = c / g.channels_per_deformable_group();
    const scalar_t* plane = input + c * g.plane_size();
    for (int64_t tap = 0; tap < g.taps(); ++tap) {
      columns[(c * g.taps() + tap) * g.positions() + p] = interpolate(plane, corners_at(g, offset, group, tap, p));
    }
  }
}

// One thread per (deformable group, tap, position): sums the offset gradient over the group's
// channels and refills the columns for the weight gradient.
template <typename scalar_t>
__global__ void offset_grad_kernel(const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
                                   const scalar_t* __restrict__ grad_columns, const Geometry g,
                                   scalar_t* __restrict__ columns, scalar_t* __restrict__ grad_offset) {
  const int64_t total = g.deformable_groups * g.taps() * g.positions();
  const int64_t group_channels = g.channels_per_deformable_group();
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t p = index % g.positions();
    const int64_t group_tap = index / g.positions();
    const int64_t tap = group_tap % g.taps();
    const int64_t group = group_tap / g.taps();
    const Corners<scalar_t> corners = corners_at(g, offset, group, tap, p);
    scalar_t grad_y = 0, grad_x = 0;
    for (int64_t c = group * group_channels; c < (group + 1) * group_channels; ++c) {
      const int64_t column = (c * g.taps() + tap) * g.positions() + p;
      scalar_t value, d_y, d_x;
      interpolate_with_gradient(input + c * g.plane_size(), corners, &value, &d_y, &d_x);
      if (columns != nullptr) columns[column] = value;
      if (grad_offset != nullptr) {
        grad_y += grad_columns[column] * d_y;
        grad_x += grad_columns[column] * d_x;
      }
    }
    if (grad_offset != nullptr) {
      grad_offset[offset_row_channel(group_tap) * g.positions() + p] = grad_y;
      grad_offset[offset_col_channel(group_tap) * g.positions() + p] = grad_x;
    }
  }
}

// One thread per (channel, tap, position); neighbouring samples share pixels, hence the atomics.
template <typename scalar_t>
__global__ void input_grad_kernel(const scalar_t* __restrict__ offset, const scalar_t* __restrict__ grad_columns,
                                  const Geometry g, scalar_t* __restrict__ grad_input) {
  const int64_t total = g.channels * g.taps() * g.positions();
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
       index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t p = index % g.positions();
    const int64_t row = index / g.positions();  // c * taps + tap
    const int64_t tap = row % g.taps();
    const int64_t c = row / g.taps();
    const Corners<scalar_t> corners = corners_at(g, offset, c / g.channels_per_deformable_group(), tap, p);
    const scalar_t grad = grad_columns[index];
    scalar_t* plane = grad_input + c * g.plane_size();
DCN_UNROLL
    for (int k = 0; k < kCorners; ++k) {
      if (corners.index[k] != kOutsideImage) gpuAtomicAdd(plane + corners.index[k], corners.weight[k] * grad);
    }
  }
}

void check_cuda(const at::Tensor& tensor, const at::Tensor& input, const char* name) {
  TORCH_CHECK(tensor.is_cuda() && tensor.is_contiguous() && tensor.device() == input.device(),
              "deform_conv (CUDA): ", name, " must be a contiguous tensor on ", input.device());
}

}  // namespace

void deformable_im2col_cuda(const at::Tensor& input, const at::Tensor& offset, const Geometry& g,
                            at::Tensor& columns) {
  check_cuda(input, input, "input");
  check_cuda(offset, input, "offset");
  check_cuda(columns, input, "columns");
  const c10::cuda::CUDAGuard device_guard(input.device());
  const int64_t work = g.channels * g.positions();
  if (work == 0) return;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deformable_im2col_cuda", [&] {
    im2col_kernel<scalar_t><<<blocks_for(work), kThreadsPerBlock, 0, stream>>>(
        input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), g, columns.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void deformable_backward_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& grad_columns,
                              const Geometry& g, at::Tensor& columns, at::Tensor& grad_input,
                              at::Tensor& grad_offset) {
  check_cuda(input, input, "input");
  check_cuda(offset, input, "offset");
  if (grad_columns.defined()) check_cuda(grad_columns, input, "grad_columns");
  if (columns.defined()) check_cuda(columns, input, "columns");
  if (grad_input.defined()) check_cuda(grad_input, input, "grad_input");
  if (grad_offset.defined()) check_cuda(grad_offset, input, "grad_offset");
  TORCH_CHECK(grad_columns.defined() || !(grad_input.defined() || grad_offset.defined()),
              "deform_conv (CUDA): grad_columns missing");
  const c10::cuda::CUDAGuard device_guard(input.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deformable_backward_cuda", [&] {
    const scalar_t* grad_columns_ptr = grad_columns.defined() ? grad_columns.data_ptr<scalar_t>() : nullptr;
    const int64_t offset_work = g.deformable_groups * g.taps() * g.positions();
    if ((columns.defined() || grad_offset.defined()) && offset_work > 0) {
      offset_grad_kernel<scalar_t><<<blocks_for(offset_work), kThreadsPerBlock, 0, stream>>>(
          input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), grad_columns_ptr, g,
          columns.defined() ? columns.data_ptr<scalar_t>() : nullptr,
          grad_offset.defined() ? grad_offset.data_ptr<scalar_t>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    const int64_t input_work = g.channels * g.taps() * g.positions();
    if (grad_input.defined() && input_work > 0) {
      input_grad_kernel<scalar_t><<<blocks_for(input_work), kThreadsPerBlock, 0, stream>>>(
          offset.data_ptr<scalar_t>(), grad_columns_ptr, g, grad_input.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

}  // namespace wnet_dcn
