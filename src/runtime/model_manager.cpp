#include "runtime/model_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "util/error.h"

namespace pensieve {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The bytes a model's files take: what loading it maps, before its KV cache.
uint64_t path_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return fs::file_size(path, ec);
  uint64_t n = 0;
  if (fs::is_directory(path, ec))
    for (const auto& e : fs::directory_iterator(path, ec))
      if (e.is_regular_file(ec)) n += e.file_size(ec);
  return n;
}

}  // namespace

milliseconds parse_keep_alive(std::string_view text) {
  const std::string t(text);
  auto bad = [&] {
    return Error("invalid keep_alive '" + t + "': expected a duration such as \"5m\", \"30s\", \"1h\", \"0\" or \"-1\"");
  };
  if (t.empty()) throw bad();
  if (t[0] == '-') {
    for (size_t i = 1; i < t.size(); ++i)
      if (!std::isdigit(static_cast<unsigned char>(t[i])) && t[i] != '.' && !std::isalpha(static_cast<unsigned char>(t[i]))) throw bad();
    return milliseconds(-1);
  }
  double total_ms = 0;
  size_t i = 0;
  bool any = false;
  while (i < t.size()) {
    size_t j = i;
    while (j < t.size() && (std::isdigit(static_cast<unsigned char>(t[j])) || t[j] == '.')) ++j;
    if (j == i) throw bad();
    double v = 0;
    try {
      v = std::stod(t.substr(i, j - i));
    } catch (const std::exception&) {
      throw bad();
    }
    size_t k = j;
    while (k < t.size() && std::isalpha(static_cast<unsigned char>(t[k]))) ++k;
    const std::string unit = t.substr(j, k - j);
    double scale;
    if (unit.empty() || unit == "s") scale = 1000;
    else if (unit == "ms") scale = 1;
    else if (unit == "m") scale = 60e3;
    else if (unit == "h") scale = 3600e3;
    else throw bad();
    if (unit.empty() && k != t.size()) throw bad();
    total_ms += v * scale;
    any = true;
    i = k;
  }
  if (!any || total_ms > 1e15) throw bad();
  return milliseconds(int64_t(total_ms));
}

// One loaded copy of a model; leases share it. `in_use` and `last_used` are under State::mu.
struct Loaded {
  std::shared_ptr<ManagedModel> model;
  uint64_t memory = 0;
  int64_t loaded_unix = 0;
  int in_use = 0;
  Clock::time_point last_used = Clock::now();
};

struct Slot {
  ModelSource source;
  bool pinned = false;
  std::shared_ptr<Loaded> current;  // null when not loaded
  bool loading = false;
  uint64_t load_generation = 0;     // bumped by each finished load attempt
  std::string last_error;           // of the last failed attempt
  std::optional<milliseconds> keep_alive_override;  // from the latest request that named one
};

struct ModelManager::State {
  Loader loader;
  ModelLimits limits;
  mutable std::mutex mu;
  std::condition_variable cv;        // loads finishing
  std::condition_variable timer_cv;  // wakes the keep_alive timer
  std::vector<std::unique_ptr<Slot>> slots;
  std::map<std::string, ModelCounters> counters;
  bool stop = false;
  std::thread timer;

  Slot* find(const std::string& name) {
    for (auto& s : slots)
      if (s->source.name == name) return s.get();
    return nullptr;
  }

  milliseconds keep_alive_of(const Slot& s) const {
    if (s.keep_alive_override) return *s.keep_alive_override;
    if (s.source.keep_alive) return *s.source.keep_alive;
    return limits.keep_alive;
  }

  // Takes the model out of the table (its memory goes when the last lease does).
  void unload(Slot& s, const char* reason, std::vector<std::shared_ptr<Loaded>>& victims) {
    spdlog::info("unloading model '{}' ({}{})", s.source.name, reason,
                 s.current->in_use > 0 ? "; freed when its running requests end" : "");
    victims.push_back(std::move(s.current));
    s.current.reset();
    ++counters[s.source.name].unloads[reason];
  }

  // Unloads least-recently-used models (idle ones first) until `incoming` more bytes and one more
  // model fit the limits. Under mu.
  void make_room(const Slot& self, uint64_t incoming, std::vector<std::shared_ptr<Loaded>>& victims) {
    for (;;) {
      int count = 0;
      uint64_t memory = incoming;
      for (const auto& s : slots) {
        if (s.get() == &self) continue;
        if (s->current) ++count, memory += s->current->memory;
        else if (s->loading) ++count;
      }
      const bool too_many = limits.max_loaded_models > 0 && count + 1 > limits.max_loaded_models;
      const bool too_big = limits.max_model_memory_bytes > 0 && memory > limits.max_model_memory_bytes;
      if (!too_many && !too_big) return;
      Slot* victim = nullptr;
      for (auto& s : slots) {
        if (s.get() == &self || !s->current || s->pinned) continue;
        auto older = [](const Slot& a, const Slot& b) {
          const bool a_idle = a.current->in_use == 0, b_idle = b.current->in_use == 0;
          if (a_idle != b_idle) return a_idle;
          return a.current->last_used < b.current->last_used;
        };
        if (!victim || older(*s, *victim)) victim = s.get();
      }
      if (!victim) {
        spdlog::warn("loading model '{}' exceeds the model limits, but nothing else can be unloaded", self.source.name);
        return;
      }
      unload(*victim, too_many ? "lru" : "memory", victims);
    }
  }

  // Unloads idle models whose keep_alive has passed; returns when the next one falls due.
  Clock::time_point expire(std::vector<std::shared_ptr<Loaded>>& victims) {
    const auto now = Clock::now();
    auto next = now + std::chrono::seconds(1);
    for (auto& s : slots) {
      if (!s->current || s->pinned || s->current->in_use > 0) continue;
      const milliseconds ka = keep_alive_of(*s);
      if (ka.count() < 0) continue;
      const auto due = s->current->last_used + ka;
      if (due <= now) unload(*s, "expired", victims);
      else next = std::min(next, due);
    }
    return next;
  }

  void timer_loop() {
    std::unique_lock lock(mu);
    while (!stop) {
      std::vector<std::shared_ptr<Loaded>> victims;
      const auto next = expire(victims);
      lock.unlock();
      victims.clear();  // freed outside the lock
      lock.lock();
      if (!stop) timer_cv.wait_until(lock, next);
    }
  }

  ModelLease lease(Slot& s, std::optional<milliseconds> keep_alive);
  void release(const std::shared_ptr<Loaded>& loaded, Slot* slot);
};

struct ModelLease::Holder {
  std::shared_ptr<ModelManager::State> state;
  std::shared_ptr<Loaded> loaded;
  Slot* slot = nullptr;
  ~Holder() {
    if (state) state->release(loaded, slot);
  }
};

ModelLease& ModelLease::operator=(ModelLease&& o) noexcept {
  holder_ = std::move(o.holder_);
  model_ = std::move(o.model_);
  return *this;
}

ModelLease::~ModelLease() = default;

ModelLease ModelManager::State::lease(Slot& s, std::optional<milliseconds> keep_alive) {
  if (keep_alive) s.keep_alive_override = keep_alive;
  ++s.current->in_use;
  s.current->last_used = Clock::now();
  ModelLease l;
  l.holder_ = std::make_shared<ModelLease::Holder>();
  l.holder_->loaded = s.current;
  l.holder_->slot = &s;
  l.model_ = s.current->model;
  return l;
}

void ModelManager::State::release(const std::shared_ptr<Loaded>& loaded, Slot* slot) {
  std::vector<std::shared_ptr<Loaded>> victims;
  {
    std::lock_guard lock(mu);
    --loaded->in_use;
    loaded->last_used = Clock::now();
    // keep_alive 0: unloaded as soon as the last request ends (others wait for the timer).
    if (loaded->in_use == 0 && slot->current == loaded && !slot->pinned && keep_alive_of(*slot).count() == 0)
      unload(*slot, "expired", victims);
  }
  timer_cv.notify_all();
}

ModelManager::ModelManager(Loader loader, ModelLimits limits) : state_(std::make_shared<State>()) {
  state_->loader = std::move(loader);
  state_->limits = limits;
  state_->timer = std::thread([s = state_.get()] { s->timer_loop(); });
}

ModelManager::~ModelManager() {
  {
    std::lock_guard lock(state_->mu);
    state_->stop = true;
  }
  state_->timer_cv.notify_all();
  state_->timer.join();
}

void ModelManager::add_source(ModelSource source) {
  std::lock_guard lock(state_->mu);
  if (state_->find(source.name)) throw Error("two models share the name '" + source.name + "'");
  auto slot = std::make_unique<Slot>();
  slot->source = std::move(source);
  state_->slots.push_back(std::move(slot));
}

void ModelManager::add_loaded(const std::string& name, std::shared_ptr<ManagedModel> model) {
  std::lock_guard lock(state_->mu);
  if (state_->find(name)) throw Error("two models share the name '" + name + "'");
  auto slot = std::make_unique<Slot>();
  slot->source.name = name;
  slot->pinned = true;
  slot->current = std::make_shared<Loaded>();
  slot->current->memory = model->memory_bytes();
  slot->current->model = std::move(model);
  slot->current->loaded_unix = unix_now();
  state_->slots.push_back(std::move(slot));
}

bool ModelManager::contains(const std::string& name) const {
  std::lock_guard lock(state_->mu);
  return state_->find(name) != nullptr;
}

ModelLease ModelManager::try_acquire(const std::string& name, std::optional<milliseconds> keep_alive) {
  std::lock_guard lock(state_->mu);
  Slot* s = state_->find(name);
  if (!s || !s->current) return {};
  ModelLease l = state_->lease(*s, keep_alive);
  l.holder_->state = state_;
  return l;
}

ModelLease ModelManager::acquire(const std::string& name, std::optional<milliseconds> keep_alive) {
  State& st = *state_;
  std::unique_lock lock(st.mu);
  Slot* s = st.find(name);
  if (!s) throw Error("no model named '" + name + "'");
  while (!s->current && s->loading) {
    const uint64_t generation = s->load_generation;
    st.cv.wait(lock, [&] { return s->load_generation != generation; });
    if (!s->current && !s->loading) throw Error(s->last_error);  // the load we waited for failed
  }
  if (!s->current) {
    s->loading = true;
    std::vector<std::shared_ptr<Loaded>> victims;
    st.make_room(*s, path_bytes(s->source.path), victims);
    lock.unlock();
    victims.clear();
    spdlog::info("loading model '{}' from {}", name, s->source.path);
    std::shared_ptr<ManagedModel> model;
    std::string error;
    try {
      model = st.loader(s->source);
      if (!model) error = s->source.path + ": the model could not be loaded";
    } catch (const std::exception& e) {
      error = e.what();
    }
    lock.lock();
    s->loading = false;
    ++s->load_generation;
    if (!model) {
      s->last_error = "model '" + name + "' failed to load: " + error;
      ++st.counters[name].load_failures;
      spdlog::error("{}", s->last_error);
      lock.unlock();
      st.cv.notify_all();
      throw Error(s->last_error);
    }
    auto loaded = std::make_shared<Loaded>();
    loaded->memory = model->memory_bytes();
    loaded->model = std::move(model);
    loaded->loaded_unix = unix_now();
    s->current = loaded;
    ++st.counters[name].loads;
    // The real size may exceed the estimate from the files: make room again (not for this one).
    st.make_room(*s, loaded->memory, victims);
    st.cv.notify_all();
  }
  ModelLease l = st.lease(*s, keep_alive);
  l.holder_->state = state_;
  lock.unlock();
  st.timer_cv.notify_all();
  return l;
}

std::vector<LoadedModelInfo> ModelManager::loaded() const {
  std::lock_guard lock(state_->mu);
  std::vector<LoadedModelInfo> out;
  const auto now = Clock::now();
  for (const auto& s : state_->slots) {
    if (!s->current) continue;
    LoadedModelInfo i;
    i.name = s->source.name;
    i.memory_bytes = s->current->memory;
    i.loaded_unix = s->current->loaded_unix;
    i.in_use = s->current->in_use;
    i.pinned = s->pinned;
    const milliseconds ka = state_->keep_alive_of(*s);
    if (!s->pinned && i.in_use == 0 && ka.count() >= 0) {
      const auto left = std::chrono::duration_cast<std::chrono::seconds>(s->current->last_used + ka - now);
      i.expires_unix = unix_now() + std::max<int64_t>(0, left.count());
    }
    out.push_back(i);
  }
  return out;
}

std::vector<std::shared_ptr<ManagedModel>> ModelManager::loaded_models() const {
  std::lock_guard lock(state_->mu);
  std::vector<std::shared_ptr<ManagedModel>> out;
  for (const auto& s : state_->slots)
    if (s->current) out.push_back(s->current->model);
  return out;
}

std::map<std::string, ModelCounters> ModelManager::counters() const {
  std::lock_guard lock(state_->mu);
  return state_->counters;
}

const ModelLimits& ModelManager::limits() const { return state_->limits; }

}  // namespace pensieve
