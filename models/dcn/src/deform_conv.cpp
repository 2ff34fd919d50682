// Deformable convolution v1 over a batch: per image, the deformed samples are gathered into a column
// matrix (im2col) and multiplied with the weight by ATen's GEMM, as torchvision does. The per-image
// gathers and scatters live in deform_conv_cpu.cpp and deform_conv_cuda.cu.
#include <torch/extension.h>

#include <limits>

#include "deform_conv.h"

namespace wnet_dcn {
namespace {

Geometry make_geometry(const at::Tensor& input, const at::Tensor& weight, int64_t stride_h,
                       int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
                       int64_t dilation_w, int64_t deformable_groups) {
  Geometry g;
  g.channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.kernel_h = weight.size(2);
  g.kernel_w = weight.size(3);
  g.stride_h = stride_h;
  g.stride_w = stride_w;
  g.pad_h = pad_h;
  g.pad_w = pad_w;
  g.dilation_h = dilation_h;
  g.dilation_w = dilation_w;
  g.deformable_groups = deformable_groups;
  g.out_height = (g.height + 2 * pad_h - dilation_h * (g.kernel_h - 1) - 1) / stride_h + 1;
  g.out_width = (g.width + 2 * pad_w - dilation_w * (g.kernel_w - 1) - 1) / stride_w + 1;
  return g;
}

void check_arguments(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight,
                     const Geometry& g, int64_t groups) {
  TORCH_CHECK(input.dim() == 4, "deform_conv: input must be [N, C, H, W], got ", input.sizes());
  TORCH_CHECK(weight.dim() == 4, "deform_conv: weight must be [out, in/groups, kh, kw], got ", weight.sizes());
  TORCH_CHECK(offset.dim() == 4, "deform_conv: offset must be 4-D, got ", offset.sizes());
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "deform_conv: the extension supports float32 and float64, got ", input.scalar_type());
  TORCH_CHECK(offset.scalar_type() == input.scalar_type() && weight.scalar_type() == input.scalar_type(),
              "deform_conv: input, offset and weight must share a dtype");
  TORCH_CHECK(offset.device() == input.device() && weight.device() == input.device(),
              "deform_conv: input, offset and weight must be on one device");
  TORCH_CHECK(g.stride_h >= 1 && g.stride_w >= 1 && g.dilation_h >= 1 && g.dilation_w >= 1 &&
                  g.pad_h >= 0 && g.pad_w >= 0,
              "deform_conv: need stride >= 1, dilation >= 1, padding >= 0");
  TORCH_CHECK(groups >= 1 && g.deformable_groups >= 1, "deform_conv: groups must be >= 1");
  TORCH_CHECK(g.channels == weight.size(1) * groups, "deform_conv: input has ", g.channels,
              " channels, weight ", weight.sizes(), " with groups=", groups, " expects ", weight.size(1) * groups);
  TORCH_CHECK(weight.size(0) % groups == 0, "deform_conv: out channels not divisible by groups");
  TORCH_CHECK(g.channels % g.deformable_groups == 0, "deform_conv: channels not divisible by deformable groups");
  TORCH_CHECK(g.out_height >= 1 && g.out_width >= 1, "deform_conv: input too small for the kernel");
  TORCH_CHECK(offset.size(0) == input.size(0) && offset.size(1) == 2 * g.deformable_groups * g.taps() &&
                  offset.size(2) == g.out_height && offset.size(3) == g.out_width,
              "deform_conv: offset must be [N, 2*deformable_groups*kh*kw, H_out, W_out], got ", offset.sizes());
  // Corners index one image plane with 32-bit integers.
  TORCH_CHECK(g.plane_size() < std::numeric_limits<int32_t>::max(), "deform_conv: image plane too large");
}

void im2col(const at::Tensor& input, const at::Tensor& offset, const Geometry& g, at::Tensor& columns) {
  if (input.is_cuda()) {
#ifdef WITH_CUDA
    deformable_im2col_cuda(input, offset, g, columns);
    return;
#else
    TORCH_CHECK(false, "deform_conv: this build of models/dcn/_C has no CUDA support");
#endif
  }
  deformable_im2col_cpu(input, offset, g, columns);
}

void backward_samples(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& grad_columns,
                      const Geometry& g, at::Tensor& columns, at::Tensor& grad_input, at::Tensor& grad_offset) {
  if (input.is_cuda()) {
#ifdef WITH_CUDA
    deformable_backward_cuda(input, offset, grad_columns, g, columns, grad_input, grad_offset);
    return;
#else
    TORCH_CHECK(false, "deform_conv: this build of models/dcn/_C has no CUDA support");
#endif
  }
  deformable_backward_cpu(input, offset, grad_columns, g, columns, grad_input, grad_offset);
}

// The inputs made contiguous, their geometry, and the argument checks, shared by forward and backward.
struct Prepared {
  at::Tensor input, offset, weight;
  Geometry g;
};

Prepared prepare(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& weight, int64_t stride_h,
                 int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                 int64_t groups, int64_t deformable_groups) {
  Prepared p{input.contiguous(), offset.contiguous(), weight.contiguous(), Geometry{}};
  p.g = make_geometry(p.input, p.weight, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                      deformable_groups);
  check_arguments(p.input, p.offset, p.weight, p.g, groups);
  return p;
}

}  // namespace

at::Tensor deform_conv_forward(const at::Tensor& input_, const at::Tensor& offset_, const at::Tensor& weight_,
                               const c10::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w,
                               int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                               int64_t groups, int64_t deformable_groups) {
  // A raw kernel: autograd goes through the Python autograd.Function, not through these GEMMs.
  at::NoGradGuard no_grad;
  const auto [input, offset, weight, g] = prepare(input_, offset_, weight_, stride_h, stride_w, pad_h, pad_w,
                                                  dilation_h, dilation_w, groups, deformable_groups);
  const int64_t batch = input.size(0);
  const int64_t out_channels = weight.size(0);
  at::Tensor output = at::zeros({batch, out_channels, g.out_height, g.out_width}, input.options());
  if (batch > 0) {
    at::Tensor columns = at::empty({g.channels * g.taps(), g.positions()}, input.options());
    // [groups, C/groups * taps, P] and [groups, out/groups, C/groups * taps]
    const at::Tensor group_columns = columns.view({groups, -1, g.positions()});
    const at::Tensor group_weight = weight.view({groups, out_channels / groups, -1});
    for (int64_t n = 0; n < batch; ++n) {
      im2col(input[n], offset[n], g, columns);
      at::Tensor out_n = output[n].view({groups, out_channels / groups, g.positions()});
      at::bmm_out(out_n, group_weight, group_columns);
    }
  }
  if (bias.has_value() && bias->defined()) output.add_(bias->view({1, out_channels, 1, 1}));
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv_backward(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& offset_, const at::Tensor& weight_,
    int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
    int64_t groups, int64_t deformable_groups, bool need_input_grad, bool need_offset_grad,
    bool need_weight_grad, bool need_bias_grad) {
  at::NoGradGuard no_grad;
  const auto [input, offset, weight, g] = prepare(input_, offset_, weight_, stride_h, stride_w, pad_h, pad_w,
                                                  dilation_h, dilation_w, groups, deformable_groups);
  const at::Tensor grad_output = grad_output_.contiguous();
  const int64_t batch = input.size(0);
  const int64_t out_channels = weight.size(0);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({batch, out_channels, g.out_height, g.out_width}),
              "deform_conv: grad_output has shape ", grad_output.sizes());

  at::Tensor grad_input, grad_offset, grad_weight, grad_bias;
  if (need_input_grad) grad_input = at::zeros_like(input);
  if (need_offset_grad) grad_offset = at::zeros_like(offset);
  if (need_weight_grad) grad_weight = at::zeros_like(weight);
  if (need_bias_grad) grad_bias = grad_output.sum({0, 2, 3});
  if (batch == 0 || !(need_input_grad || need_offset_grad || need_weight_grad)) {
    return {grad_input, grad_offset, grad_weight, grad_bias};
  }

  const at::Tensor group_weight = weight.view({groups, out_channels / groups, -1});
  at::Tensor columns, grad_columns, group_grad_weight;
  if (need_weight_grad) {
    columns = at::empty({g.channels * g.taps(), g.positions()}, input.options());
    group_grad_weight = grad_weight.view({groups, out_channels / groups, -1});
  }
  const bool need_sample_grads = need_input_grad || need_offset_grad;
  if (need_sample_grads) grad_columns = at::empty({g.channels * g.taps(), g.positions()}, input.options());

  for (int64_t n = 0; n < batch; ++n) {
    // [groups, out/groups, P]
    const at::Tensor grad_out_n = grad_output[n].view({groups, out_channels / groups, g.positions()});
    if (need_sample_grads) {
      // grad_columns[group] = weight[group]^T @ grad_out[group]: [C/groups * taps, P]
      at::Tensor group_grad_columns = grad_columns.view({groups, -1, g.positions()});
      at::bmm_out(group_grad_columns, group_weight.transpose(1, 2), grad_out_n);
      at::Tensor grad_input_n = need_input_grad ? grad_input[n] : at::Tensor();
      at::Tensor grad_offset_n = need_offset_grad ? grad_offset[n] : at::Tensor();
      backward_samples(input[n], offset[n], grad_columns, g, columns, grad_input_n, grad_offset_n);
    } else {
      im2col(input[n], offset[n], g, columns);
    }
    if (need_weight_grad) {
      // grad_weight[group] += grad_out[group] @ columns[group]^T: [out/groups, C/groups * taps]
      group_grad_weight.baddbmm_(grad_out_n, columns.view({groups, -1, g.positions()}).transpose(1, 2));
    }
  }
  return {grad_input, grad_offset, grad_weight, grad_bias};
}

bool compiled_with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace wnet_dcn

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Deformable convolution v1 (Wnet): C++ CPU (OpenMP) and CUDA kernels";
  m.def("forward", &wnet_dcn::deform_conv_forward, "deformable convolution forward", py::arg("input"),
        py::arg("offset"), py::arg("weight"), py::arg("bias"), py::arg("stride_h"), py::arg("stride_w"),
        py::arg("pad_h"), py::arg("pad_w"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("groups"),
        py::arg("deformable_groups"));
  m.def("backward", &wnet_dcn::deform_conv_backward,
        "deformable convolution backward: (grad_input, grad_offset, grad_weight, grad_bias)",
        py::arg("grad_output"), py::arg("input"), py::arg("offset"), py::arg("weight"), py::arg("stride_h"),
        py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"), py::arg("dilation_h"), py::arg("dilation_w"),
        py::arg("groups"), py::arg("deformable_groups"), py::arg("need_input_grad"),
        py::arg("need_offset_grad"), py::arg("need_weight_grad"), py::arg("need_bias_grad"));
  m.def("compiled_with_cuda", &wnet_dcn::compiled_with_cuda, "whether the CUDA kernels were built");
}
