// JobChannel: an event that arrives while the connection's coroutine is away from its wait (writing
// the events before it) ends the next wait at once, not at the ping timeout.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>

#include <boost/asio.hpp>

#include "server/job_channel.h"

using namespace pensieve;
using namespace pensieve::server;
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

// Lets the io_context run what was posted before (as a write's completion does).
asio::awaitable<void> yield() {
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
}

TEST(JobChannel, AnEventPushedWhileTheReaderIsAwayEndsItsNextWait) {
  asio::io_context ioc;
  auto channel = std::make_shared<JobChannel>(ioc.get_executor());
  Clock::duration waited{};
  size_t got = 0;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        EXPECT_TRUE(channel->take().empty());
        // The scheduler thread pushes while the coroutine writes: the wake() it posts runs before
        // the coroutine waits again, with no timer to cancel.
        channel->push(GenerationEvent{GenerationEvent::Kind::Text, "a"});
        co_await yield();
        const Clock::time_point t0 = Clock::now();
        co_await channel->wait(std::chrono::seconds(3));
        waited = Clock::now() - t0;
        got = channel->take().size();
      },
      asio::detached);
  ioc.run();
  EXPECT_LT(waited, std::chrono::milliseconds(500));
  EXPECT_EQ(got, 1u);
}

TEST(JobChannel, AWakeWhileTheReaderIsAwayEndsItsNextWait) {
  asio::io_context ioc;
  auto channel = std::make_shared<JobChannel>(ioc.get_executor());
  Clock::duration waited{};
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        channel->wake();  // e.g. the client left while the coroutine wrote
        co_await yield();
        const Clock::time_point t0 = Clock::now();
        co_await channel->wait(std::chrono::seconds(3));
        waited = Clock::now() - t0;
      },
      asio::detached);
  ioc.run();
  EXPECT_LT(waited, std::chrono::milliseconds(500));
}

TEST(JobChannel, APushEndsAWaitInProgressAndAnIdleWaitTimesOut) {
  asio::io_context ioc;
  auto channel = std::make_shared<JobChannel>(ioc.get_executor());
  Clock::duration woken{}, idle{};
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        Clock::time_point t0 = Clock::now();
        co_await channel->wait(std::chrono::milliseconds(50));  // nothing comes
        idle = Clock::now() - t0;
        // A push while the coroutine waits (from a timer here, from the scheduler thread in serving).
        asio::steady_timer later(co_await asio::this_coro::executor, std::chrono::milliseconds(20));
        later.async_wait([&](const boost::system::error_code&) {
          channel->push(GenerationEvent{GenerationEvent::Kind::Done, {}});
        });
        t0 = Clock::now();
        co_await channel->wait(std::chrono::seconds(3));
        woken = Clock::now() - t0;
        EXPECT_EQ(channel->take().size(), 1u);
      },
      asio::detached);
  ioc.run();
  EXPECT_GE(idle, std::chrono::milliseconds(50));
  EXPECT_LT(woken, std::chrono::milliseconds(1000));
}

}  // namespace
