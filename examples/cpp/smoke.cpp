// Calls memops ops from C++ through the dispatcher (as a libtorch user would) and checks a few
// against ATen. Exit code 0 on success.
#include <torch/torch.h>

#include <ATen/core/dispatch/Dispatcher.h>

#include <iostream>

namespace {

at::Tensor call_read(const at::Tensor& memory, const at::Tensor& weights) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("memops::read", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(memory, weights);
}

at::Tensor call_content_address(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("memops::content_address", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const c10::optional<at::Tensor>&, c10::string_view, double)>();
  return op.call(memory, keys, beta, c10::nullopt, "cosine", 1e-8);
}

bool close(const char* what, const at::Tensor& got, const at::Tensor& want) {
  const bool ok = at::allclose(got, want, 1e-5, 1e-6);
  std::cout << what << ": " << (ok ? "ok" : "MISMATCH") << " (max abs diff "
            << (got - want).abs().max().item<double>() << ")\n";
  return ok;
}

}  // namespace

int main() {
  torch::manual_seed(0);
  const auto memory = torch::randn({4, 128, 20});
  const auto keys = torch::randn({4, 2, 20});
  const auto beta = torch::rand({4, 2}) * 5;
  const auto weights = torch::softmax(torch::randn({4, 2, 128}), -1);

  bool ok = close("read", call_read(memory, weights), at::bmm(weights, memory));
  const auto sim = at::cosine_similarity(keys.unsqueeze(2), memory.unsqueeze(1), -1, 1e-8);
  ok &= close("content_address", call_content_address(memory, keys, beta),
              at::softmax(beta.unsqueeze(-1) * sim, -1));
  try {
    call_read(memory, weights.narrow(2, 0, 100));
    std::cout << "bad shape: no error\n";
    ok = false;
  } catch (const c10::Error& e) {
    std::cout << "bad shape: " << e.what_without_backtrace() << "\n";
  }
  std::cout << (ok ? "memops C++ smoke test passed" : "memops C++ smoke test FAILED") << "\n";
  return ok ? 0 : 1;
}
