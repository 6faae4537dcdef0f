// Argument checks shared by every device's launchers. The messages are the contract's words, and
// memops/_validate.py raises the same text (for the fake kernels and the reference backend): a test
// compares the two. Shapes are named by letters (B batch, H heads, N slots, W width, S shift width);
// the first tensor that shows a letter fixes its size, later tensors must agree.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <sstream>
#include <string>

namespace memops {

// torch's Python name of a dtype, so that C++ and Python errors read the same.
inline std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kBool: return "torch.bool";
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kShort: return "torch.int16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kComplexHalf: return "torch.complex32";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(t);
  }
}

// Sizes bound so far, by letter.
class Dims {
 public:
  explicit Dims(const char* op) : op_(op) { sizes_.fill(-1); }

  // Checks `t` has one dim per letter of `letters` and binds or matches each letter's size.
  void check(const at::Tensor& t, const char* name, const char* letters) {
    const int64_t rank = static_cast<int64_t>(std::char_traits<char>::length(letters));
    bool ok = t.dim() == rank;
    for (int64_t d = 0; ok && d < rank; ++d) {
      const int64_t bound = sizes_[slot(letters[d])];
      ok = bound < 0 || bound == t.size(d);
    }
    TORCH_CHECK_VALUE(ok, op_, ": ", name, " must have shape ", expected(letters), ", got ",
                      t.sizes());
    for (int64_t d = 0; d < rank; ++d) sizes_[slot(letters[d])] = t.size(d);
  }

  int64_t operator[](char letter) const { return sizes_[slot(letter)]; }

 private:
  static int slot(char c) { return c - 'A'; }
  std::string expected(const char* letters) const {
    std::ostringstream os;
    os << "(";
    for (const char* p = letters; *p; ++p) os << (p == letters ? "" : ", ") << *p;
    os << ") = (";
    for (const char* p = letters; *p; ++p) {
      os << (p == letters ? "" : ", ");
      if (sizes_[slot(*p)] < 0) os << *p; else os << sizes_[slot(*p)];
    }
    os << ")";
    return os.str();
  }
  const char* op_;
  std::array<int64_t, 26> sizes_;
};

// `t` is a floating tensor of `like`'s dtype, on `like`'s device.
inline void check_float_like(const char* op, const at::Tensor& t, const char* name,
                             const at::Tensor& like, const char* like_name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be a floating-point tensor, got ", dtype_name(t.scalar_type()));
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have the dtype of ",
                   like_name, " (", dtype_name(like.scalar_type()), "), got ",
                   dtype_name(t.scalar_type()));
  TORCH_CHECK_VALUE(t.device() == like.device(), op, ": ", name, " must be on the device of ",
                    like_name, " (", like.device(), "), got ", t.device());
}

inline void check_first_float(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be a floating-point tensor, got ", dtype_name(t.scalar_type()));
}

// The mask: bool, on the device of the first input (`first_name`), shape `letters`.
inline void check_mask(const char* op, const c10::optional<at::Tensor>& mask, const at::Tensor& first,
                       Dims& dims, const char* first_name = "memory", const char* letters = "BN") {
  if (!mask.has_value()) return;
  TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, op, ": mask must be a bool tensor, got ",
                   dtype_name(mask->scalar_type()));
  TORCH_CHECK_VALUE(mask->device() == first.device(), op, ": mask must be on the device of ", first_name,
                    " (", first.device(), "), got ", mask->device());
  dims.check(*mask, "mask", letters);
}

inline void check_similarity(const char* op, c10::string_view similarity, double eps) {
  TORCH_CHECK_VALUE(similarity == "cosine" || similarity == "dot", op,
                    ": similarity must be 'cosine' or 'dot', got '", similarity, "'");
  TORCH_CHECK_VALUE(eps > 0, op, ": eps must be positive, got ", eps);
}

inline void check_odd_shift(const char* op, const Dims& dims) {
  TORCH_CHECK_VALUE(dims['S'] % 2 == 1, op,
                    ": kernel width S must be odd (kernel[S // 2] is the 'stay' tap), got S = ",
                    dims['S']);
}

// One check per op, called by every device's launcher (forward and backward).

inline void check_content_address(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                                  const c10::optional<at::Tensor>& mask, c10::string_view similarity,
                                  double eps) {
  const char* op = "content_address";
  Dims dims(op);
  check_first_float(op, memory, "memory");
  check_float_like(op, keys, "keys", memory, "memory");
  check_float_like(op, beta, "beta", memory, "memory");
  dims.check(memory, "memory", "BNW");
  dims.check(keys, "keys", "BHW");
  dims.check(beta, "beta", "BH");
  check_mask(op, mask, memory, dims);
  check_similarity(op, similarity, eps);
}

// content_scores takes content_address's arguments (its scores before the softmax).
inline void check_content_scores(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                                 const c10::optional<at::Tensor>& mask, c10::string_view similarity,
                                 double eps) {
  const char* op = "content_scores";
  Dims dims(op);
  check_first_float(op, memory, "memory");
  check_float_like(op, keys, "keys", memory, "memory");
  check_float_like(op, beta, "beta", memory, "memory");
  dims.check(memory, "memory", "BNW");
  dims.check(keys, "keys", "BHW");
  dims.check(beta, "beta", "BH");
  check_mask(op, mask, memory, dims);
  check_similarity(op, similarity, eps);
}

inline void check_shift(const at::Tensor& weights, const at::Tensor& kernel) {
  const char* op = "shift";
  Dims dims(op);
  check_first_float(op, weights, "weights");
  check_float_like(op, kernel, "kernel", weights, "weights");
  dims.check(weights, "weights", "BHN");
  dims.check(kernel, "kernel", "BHS");
  check_odd_shift(op, dims);
}

inline void check_sharpen(const at::Tensor& weights, const at::Tensor& gamma) {
  const char* op = "sharpen";
  Dims dims(op);
  check_first_float(op, weights, "weights");
  check_float_like(op, gamma, "gamma", weights, "weights");
  dims.check(weights, "weights", "BHN");
  dims.check(gamma, "gamma", "BH");
}

inline void check_ntm_address(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                              const at::Tensor& gate, const at::Tensor& kernel, const at::Tensor& gamma,
                              const at::Tensor& prev_weights, double eps) {
  const char* op = "ntm_address";
  Dims dims(op);
  check_first_float(op, memory, "memory");
  check_float_like(op, keys, "keys", memory, "memory");
  check_float_like(op, beta, "beta", memory, "memory");
  check_float_like(op, gate, "gate", memory, "memory");
  check_float_like(op, kernel, "kernel", memory, "memory");
  check_float_like(op, gamma, "gamma", memory, "memory");
  check_float_like(op, prev_weights, "prev_weights", memory, "memory");
  dims.check(memory, "memory", "BNW");
  dims.check(keys, "keys", "BHW");
  dims.check(beta, "beta", "BH");
  dims.check(gate, "gate", "BH");
  dims.check(kernel, "kernel", "BHS");
  dims.check(gamma, "gamma", "BH");
  dims.check(prev_weights, "prev_weights", "BHN");
  check_odd_shift(op, dims);
  check_similarity(op, "cosine", eps);
}

inline void check_read(const at::Tensor& memory, const at::Tensor& weights) {
  const char* op = "read";
  Dims dims(op);
  check_first_float(op, memory, "memory");
  check_float_like(op, weights, "weights", memory, "memory");
  dims.check(memory, "memory", "BNW");
  dims.check(weights, "weights", "BHN");
}

inline void check_write(const at::Tensor& memory, const at::Tensor& weights,
                        const c10::optional<at::Tensor>& erase, const at::Tensor& add) {
  const char* op = "write";
  Dims dims(op);
  check_first_float(op, memory, "memory");
  check_float_like(op, weights, "weights", memory, "memory");
  if (erase.has_value()) check_float_like(op, *erase, "erase", memory, "memory");
  check_float_like(op, add, "add", memory, "memory");
  dims.check(memory, "memory", "BNW");
  dims.check(weights, "weights", "BHN");
  if (erase.has_value()) dims.check(*erase, "erase", "BHW");
  dims.check(add, "add", "BHW");
}

// B batch, F facts, D state width.
inline void check_attention_gru(const at::Tensor& xr, const at::Tensor& xh, const at::Tensor& ur,
                                const at::Tensor& uh, const at::Tensor& bu, const at::Tensor& gates,
                                const at::Tensor& h0, const c10::optional<at::Tensor>& mask) {
  const char* op = "attention_gru";
  Dims dims(op);
  check_first_float(op, xr, "xr");
  check_float_like(op, xh, "xh", xr, "xr");
  check_float_like(op, ur, "ur", xr, "xr");
  check_float_like(op, uh, "uh", xr, "xr");
  check_float_like(op, bu, "bu", xr, "xr");
  check_float_like(op, gates, "gates", xr, "xr");
  check_float_like(op, h0, "h0", xr, "xr");
  dims.check(xr, "xr", "BFD");
  dims.check(xh, "xh", "BFD");
  dims.check(ur, "ur", "DD");
  dims.check(uh, "uh", "DD");
  dims.check(bu, "bu", "D");
  dims.check(gates, "gates", "BF");
  dims.check(h0, "h0", "BD");
  check_mask(op, mask, xr, dims, "xr", "BF");
}

// A backward op's incoming gradient (name "grad") or saved forward output ("weights", "out"): the
// forward output's shape, and `like`'s dtype and device.
inline void check_output_like(const char* op, const at::Tensor& t, const char* name, at::IntArrayRef shape,
                              const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.sizes() == shape, op, ": ", name, " must have the output's shape ", shape,
                    ", got ", t.sizes());
  check_float_like(op, t, name, like, "the inputs");
}

}  // namespace memops
