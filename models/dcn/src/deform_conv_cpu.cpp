// CPU (OpenMP) gathers and scatters of deformable convolution v1 for one image.
//
// Threads split the output positions into blocks; within a block the bilinear corners of every
// (deformable group, tap) are computed once and reused by all channels of the group, and the
// column rows are walked contiguously.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <vector>

#include "deform_conv.h"

namespace wnet_dcn {
namespace {

// Output positions per block: enough to amortise the corner computation, small enough for L1/L2.
constexpr int64_t kBlockPositions = 256;
// Below this many (channel, tap, position) samples a parallel region costs more than it saves.
constexpr int64_t kMinParallelSamples = 1 << 16;

bool worth_parallel(const Geometry& g) { return g.channels * g.taps() * g.positions() >= kMinParallelSamples; }

template <typename scalar_t>
void fill_corners(const Geometry& g, const scalar_t* offset, int64_t group, int64_t tap, int64_t begin,
                  int64_t end, Corners<scalar_t>* corners) {
  const int64_t group_tap = group * g.taps() + tap;
  const scalar_t* offset_y = offset + offset_row_channel(group_tap) * g.positions();
  const scalar_t* offset_x = offset + offset_col_channel(group_tap) * g.positions();
  const int64_t tap_y = tap / g.kernel_w;
  const int64_t tap_x = tap % g.kernel_w;
  for (int64_t p = begin; p < end; ++p) {
    scalar_t y, x;
    sampling_point(g, p / g.out_width, p % g.out_width, tap_y, tap_x, offset_y[p], offset_x[p], &y, &x);
    corners[p - begin] = bilinear_corners(y, x, g.height, g.width);
  }
}

template <typename scalar_t>
void im2col_kernel(const scalar_t* input, const scalar_t* offset, const Geometry& g, scalar_t* columns) {
  const int64_t positions = g.positions();
  const int64_t blocks = (positions + kBlockPositions - 1) / kBlockPositions;
  const int64_t group_channels = g.channels_per_deformable_group();
#pragma omp parallel if (worth_parallel(g))
  {
    std::vector<Corners<scalar_t>> corners(kBlockPositions);
#pragma omp for schedule(static)
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t begin = block * kBlockPositions;
      const int64_t end = std::min(begin + kBlockPositions, positions);
      for (int64_t group = 0; group < g.deformable_groups; ++group) {
        for (int64_t tap = 0; tap < g.taps(); ++tap) {
          fill_corners(g, offset, group, tap, begin, end, corners.data());
          for (int64_t c = group * group_channels; c < (group + 1) * group_channels; ++c) {
            const scalar_t* plane = input + c * g.plane_size();
            scalar_t* row = columns + (c * g.taps() + tap) * positions;
            for (int64_t p = begin; p < end; ++p) row[p] = interpolate(plane, corners[p - begin]);
          }
        }
      }
    }
  }
}

// grad_offset (and the columns for the weight gradient): each thread owns whole positions.
template <typename scalar_t>
void offset_grad_kernel(const scalar_t* input, const scalar_t* offset, const scalar_t* grad_columns,
                        const Geometry& g, scalar_t* columns, scalar_t* grad_offset) {
  const int64_t positions = g.positions();
  const int64_t blocks = (positions + kBlockPositions - 1) / kBlockPositions;
  const int64_t group_channels = g.channels_per_deformable_group();
#pragma omp parallel if (worth_parallel(g))
  {
    std::vector<Corners<scalar_t>> corners(kBlockPositions);
    std::vector<scalar_t> grad_y(kBlockPositions), grad_x(kBlockPositions);
#pragma omp for schedule(static)
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t begin = block * kBlockPositions;
      const int64_t end = std::min(begin + kBlockPositions, positions);
      for (int64_t group = 0; group < g.deformable_groups; ++group) {
        for (int64_t tap = 0; tap < g.taps(); ++tap) {
          fill_corners(g, offset, group, tap, begin, end, corners.data());
          std::fill(grad_y.begin(), grad_y.end(), scalar_t(0));
          std::fill(grad_x.begin(), grad_x.end(), scalar_t(0));
          for (int64_t c = group * group_channels; c < (group + 1) * group_channels; ++c) {
            const scalar_t* plane = input + c * g.plane_size();
            const int64_t row = (c * g.taps() + tap) * positions;
            for (int64_t p = begin; p < end; ++p) {
              scalar_t value, d_y, d_x;
              interpolate_with_gradient(plane, corners[p - begin], &value, &d_y, &d_x);
              if (columns != nullptr) columns[row + p] = value;
              if (grad_offset != nullptr) {
                grad_y[p - begin] += grad_columns[row + p] * d_y;
                grad_x[p - begin] += grad_columns[row + p] * d_x;
              }
            }
          }
          if (grad_offset != nullptr) {
            const int64_t group_tap = group * g.taps() + tap;
            scalar_t* out_y = grad_offset + offset_row_channel(group_tap) * positions;
            scalar_t* out_x = grad_offset + offset_col_channel(group_tap) * positions;
            for (int64_t p = begin; p < end; ++p) {
              out_y[p] = grad_y[p - begin];
              out_x[p] = grad_x[p - begin];
            }
          }
        }
      }
    }
  }
}

// grad_input: each thread owns whole channels, so the scatter into a plane needs no atomics.
template <typename scalar_t>
void input_grad_kernel(const scalar_t* offset, const scalar_t* grad_columns, const Geometry& g,
                       scalar_t* grad_input) {
  const int64_t positions = g.positions();
  const int64_t group_channels = g.channels_per_deformable_group();
#pragma omp parallel if (worth_parallel(g))
  {
    std::vector<Corners<scalar_t>> corners(kBlockPositions);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < g.channels; ++c) {
      const int64_t group = c / group_channels;
      scalar_t* plane = grad_input + c * g.plane_size();
      for (int64_t tap = 0; tap < g.taps(); ++tap) {
        const scalar_t* row = grad_columns + (c * g.taps() + tap) * positions;
        for (int64_t begin = 0; begin < positions; begin += kBlockPositions) {
          const int64_t end = std::min(begin + kBlockPositions, positions);
          fill_corners(g, offset, group, tap, begin, end, corners.data());
          for (int64_t p = begin; p < end; ++p) {
            const Corners<scalar_t>& corner = corners[p - begin];
            for (int k = 0; k < kCorners; ++k) {
              if (corner.index[k] != kOutsideImage) plane[corner.index[k]] += corner.weight[k] * row[p];
            }
          }
        }
      }
    }
  }
}

void check_cpu(const at::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu() && tensor.is_contiguous(), "deform_conv (CPU): ", name,
              " must be a contiguous CPU tensor");
}

}  // namespace

void deformable_im2col_cpu(const at::Tensor& input, const at::Tensor& offset, const Geometry& g,
                           at::Tensor& columns) {
  check_cpu(input, "input");
  check_cpu(offset, "offset");
  check_cpu(columns, "columns");
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deformable_im2col_cpu", [&] {
    im2col_kernel<scalar_t>(input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), g,
                            columns.data_ptr<scalar_t>());
  });
}

void deformable_backward_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& grad_columns,
                             const Geometry& g, at::Tensor& columns, at::Tensor& grad_input,
                             at::Tensor& grad_offset) {
  check_cpu(input, "input");
  check_cpu(offset, "offset");
  if (grad_columns.defined()) check_cpu(grad_columns, "grad_columns");
  if (columns.defined()) check_cpu(columns, "columns");
  if (grad_input.defined()) check_cpu(grad_input, "grad_input");
  if (grad_offset.defined()) check_cpu(grad_offset, "grad_offset");
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deformable_backward_cpu", [&] {
    const scalar_t* grad_columns_ptr = grad_columns.defined() ? grad_columns.data_ptr<scalar_t>() : nullptr;
    if (columns.defined() || grad_offset.defined()) {
      TORCH_CHECK(!grad_offset.defined() || grad_columns_ptr != nullptr, "deform_conv: grad_columns missing");
      offset_grad_kernel<scalar_t>(input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), grad_columns_ptr, g,
                                   columns.defined() ? columns.data_ptr<scalar_t>() : nullptr,
                                   grad_offset.defined() ? grad_offset.data_ptr<scalar_t>() : nullptr);
    }
    if (grad_input.defined()) {
      TORCH_CHECK(grad_columns_ptr != nullptr, "deform_conv: grad_columns missing");
      input_grad_kernel<scalar_t>(offset.data_ptr<scalar_t>(), grad_columns_ptr, g, grad_input.data_ptr<scalar_t>());
    }
  });
}

}  // namespace wnet_dcn
