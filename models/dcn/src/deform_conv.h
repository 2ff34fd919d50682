// Entry points of the compiled deformable convolution and the per-device sampling primitives.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "sampling.h"

namespace wnet_dcn {

// Full deformable convolution over a batch; the GEMMs run through ATen on the input's device.
at::Tensor deform_conv_forward(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w,
                               int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                               int64_t groups, int64_t deformable_groups);

// Gradients (input, offset, weight, bias); a gradient not asked for comes back undefined (None).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
    int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
    int64_t groups, int64_t deformable_groups, bool need_input_grad, bool need_offset_grad,
    bool need_weight_grad, bool need_bias_grad);

// Per-image primitives. input [C, H, W], offset [2 * deformable_groups * taps, H_out, W_out],
// columns and grad_columns [C * taps, H_out * W_out] (row c * taps + tap).

// columns = the deformed samples of every channel and tap.
void deformable_im2col_cpu(const at::Tensor& input, const at::Tensor& offset, const Geometry& g,
                           at::Tensor& columns);

// From grad_columns: grad_input (accumulated) and grad_offset (written); columns is refilled as in
// deformable_im2col for the weight gradient. Any of columns, grad_input, grad_offset may be undefined.
void deformable_backward_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& grad_columns,
                             const Geometry& g, at::Tensor& columns, at::Tensor& grad_input,
                             at::Tensor& grad_offset);

#ifdef WITH_CUDA
void deformable_im2col_cuda(const at::Tensor& input, const at::Tensor& offset, const Geometry& g,
                            at::Tensor& columns);
void deformable_backward_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& grad_columns,
                              const Geometry& g, at::Tensor& columns, at::Tensor& grad_input,
                              at::Tensor& grad_offset);
#endif

}  // namespace wnet_dcn
