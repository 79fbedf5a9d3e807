// Carries a generation job's events from the scheduler thread to the connection's coroutine.
#pragma once
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core/error.hpp>

#include "runtime/scheduler.h"

namespace pensieve::server {

// The coroutine takes what has arrived and, when it has nothing to do, sleeps on a timer that each
// event (or the client leaving) cancels. One network thread runs both the coroutine and the posted
// cancels.
class JobChannel : public std::enable_shared_from_this<JobChannel> {
 public:
  explicit JobChannel(boost::asio::any_io_executor ex) : timer_(ex) {}
  void push(GenerationEvent&& e) {
    {
      std::lock_guard lock(mu_);
      events_.push_back(std::move(e));
    }
    wake();
  }
  void wake() {
    boost::asio::post(timer_.get_executor(), [self = shared_from_this()] {
      self->woken_ = true;
      self->timer_.cancel();
    });
  }
  std::deque<GenerationEvent> take() {
    std::lock_guard lock(mu_);
    return std::exchange(events_, {});
  }
  // Returns after an event, a wake() or the timeout. An event or a wake() that came while the
  // caller was away since its last wait (writing what it took: the wake found no timer to cancel)
  // returns at once.
  boost::asio::awaitable<void> wait(std::chrono::steady_clock::duration timeout) {
    bool pending = std::exchange(woken_, false);
    {
      std::lock_guard lock(mu_);
      pending = pending || !events_.empty();
    }
    if (pending) co_return;
    // No yield from here to the wait: a wake() posted after the check runs once the timer waits.
    timer_.expires_after(timeout);
    boost::beast::error_code ec;
    co_await timer_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    woken_ = false;
  }

 private:
  boost::asio::steady_timer timer_;
  bool woken_ = false;  // a wake() ran since the last wait (both on the network thread)
  std::mutex mu_;
  std::deque<GenerationEvent> events_;
};

}  // namespace pensieve::server
