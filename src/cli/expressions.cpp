// Where the long-running commands' validation compiles its jq expressions (docs/expressions.md).

#include "commands.hpp"

#include <utility>

namespace knflow::cli {
namespace {

// A plain coroutine function, not a lambda: g++ 12 mishandles coroutine lambdas with captures.
boost::asio::awaitable<std::optional<controller::CompileVerdict>> compile_on(
    engine::JqWorkerPool* pool, std::string program, std::vector<std::string> variables) {
  engine::CompileCheck checked = co_await pool->check(std::move(program), std::move(variables));
  if (!checked.done) co_return std::nullopt;
  co_return controller::CompileVerdict{.problem = std::move(checked.problem),
                                       .lasting = checked.lasting};
}

}  // namespace

controller::ExpressionCompiler compile_on_worker(engine::JqWorkerPool& pool) {
  return [pool = &pool](std::string program, std::vector<std::string> variables) {
    return compile_on(pool, std::move(program), std::move(variables));
  };
}

}  // namespace knflow::cli
