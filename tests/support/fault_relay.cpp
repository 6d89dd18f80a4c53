#include "support/fault_relay.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string_view>
#include <thread>
#include <utility>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "conductor/error.hpp"

namespace conductor::test {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A link nobody spoke on for this long belongs to a socket its client has replaced.
constexpr auto kIdleLink = 10s;
// A message waiting to change places goes on alone when no other follows within this time.
constexpr auto kSwapPatience = 250ms;

// CWP/1 HELLO: signature "CWP", major 1, type 0x01 (docs/protocol.md, section 3).
bool is_hello(const std::vector<zmq::message_t>& body) {
  if (body.size() < 2 || body[0].size() != 5) return false;
  return std::string_view(body[0].data<char>(), 5) == std::string_view("CWP\x01\x01", 5);
}

// The `host` a HELLO header (a msgpack map) carries, read without a msgpack dependency:
// the key is the fixstr "host", its value a fixstr or str8. Empty when not found.
std::string hello_host(const zmq::message_t& header) {
  const std::string_view bytes(header.data<char>(), header.size());
  auto at = bytes.find(std::string_view("\xa4host", 5));
  if (at == std::string_view::npos || at + 5 >= bytes.size()) return {};
  at += 5;
  const auto tag = static_cast<unsigned char>(bytes[at++]);
  std::size_t length = 0;
  if ((tag & 0xe0) == 0xa0) {
    length = tag & 0x1f;
  } else if (tag == 0xd9 && at < bytes.size()) {
    length = static_cast<unsigned char>(bytes[at++]);
  } else {
    return {};
  }
  if (at + length > bytes.size()) return {};
  return std::string(bytes.substr(at, length));
}

std::size_t total_bytes(const std::vector<zmq::message_t>& frames) {
  std::size_t bytes = 0;
  for (const auto& frame : frames) bytes += frame.size();
  return bytes;
}

std::vector<zmq::message_t> copy_of(const std::vector<zmq::message_t>& frames) {
  std::vector<zmq::message_t> copy;
  for (const auto& frame : frames) copy.emplace_back(frame.data(), frame.size());
  return copy;
}

}  // namespace

struct FaultRelay::Impl {
  struct Held {
    std::vector<zmq::message_t> frames;
    Clock::time_point due;
  };
  // One direction of one link: messages leave in order, each once it is due.
  struct Lane {
    std::deque<Held> queue;
    std::optional<Held> swapped;  // goes right after the next message
    Clock::time_point swapped_at;
  };
  struct Link {
    std::string routing;                      // the client connection's id at the front ROUTER
    std::string name;                         // host of its last HELLO
    std::unique_ptr<zmq::socket_t> upstream;  // opened by the first message after a cut
    Clock::time_point cut_until{};
    Clock::time_point last_heard{};
    Lane to_server;
    Lane to_client;
  };
  struct BulkTrigger {
    Direction direction;
    std::size_t min_bytes;
    int skip;
    std::chrono::milliseconds duration;
  };
  struct CutOrder {
    std::optional<std::string> client;  // none: every link
    std::chrono::milliseconds duration;
  };

  Impl(std::string server, FaultOptions options)
      : server_(std::move(server)),
        front_(context_, zmq::socket_type::router),
        options_(options),
        random_(options.seed) {
    try {
      front_.set(zmq::sockopt::linger, 0);
      front_.set(zmq::sockopt::sndhwm, 0);  // no limit: only the faults lose messages
      front_.set(zmq::sockopt::rcvhwm, 0);
      front_.bind("tcp://127.0.0.1:*");
      endpoint_ = front_.get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      throw TransportError(std::string("fault relay cannot bind tcp://127.0.0.1:*: ") + e.what());
    }
  }

  // ---- forwarding thread -------------------------------------------------------------------

  void run() {
    auto next_sweep = Clock::now() + 1s;
    while (!stopping_.load()) {
      std::vector<zmq::pollitem_t> items{{front_.handle(), 0, ZMQ_POLLIN, 0}};
      std::vector<Link*> polled;
      bool holding = false;
      for (auto& [routing, link] : links_) {
        holding = holding || !link.to_server.queue.empty() || !link.to_client.queue.empty() ||
                  link.to_server.swapped || link.to_client.swapped;
        if (!link.upstream) continue;
        items.push_back({link.upstream->handle(), 0, ZMQ_POLLIN, 0});
        polled.push_back(&link);
      }
      try {
        zmq::poll(items.data(), items.size(), holding ? 1ms : 10ms);
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
        continue;
      }
      std::lock_guard lock(mutex_);
      try {
        const auto now = Clock::now();
        apply_cut_orders(now);
        if (items[0].revents & ZMQ_POLLIN) drain_front(now);
        for (std::size_t i = 0; i < polled.size(); ++i) {
          // A cut above may have closed it since the poll.
          if ((items[i + 1].revents & ZMQ_POLLIN) && polled[i]->upstream) {
            drain_upstream(*polled[i], now);
          }
        }
        flush(now);
        if (now >= next_sweep) {
          std::erase_if(
              links_, [&](const auto& entry) { return now - entry.second.last_heard > kIdleLink; });
          next_sweep = now + 1s;
        }
      } catch (const std::exception& e) {
        failure_ = e.what();  // the test reports it; the relay goes on
      }
    }
  }

  void drain_front(Clock::time_point now) {
    for (;;) {
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(front_, std::back_inserter(frames), zmq::recv_flags::dontwait))
        return;
      if (frames.size() < 2) continue;
      std::string routing = frames[0].to_string();
      auto [it, is_new] = links_.try_emplace(routing);
      Link& link = it->second;
      if (is_new) {
        link.routing = routing;
        ++counters_.links;
      }
      link.last_heard = now;
      std::vector<zmq::message_t> body(std::make_move_iterator(frames.begin() + 1),
                                       std::make_move_iterator(frames.end()));
      if (is_hello(body)) learn_name(link, hello_host(body[1]));
      if (now < link.cut_until) {
        ++counters_.lost_to_cuts;
        continue;
      }
      if (auto duration = fire_bulk_trigger(Direction::kToServer, total_bytes(body))) {
        cut_link(link, *duration, now);
        ++counters_.bulk_cuts;
        ++counters_.lost_to_cuts;
        continue;
      }
      inject(link.to_server, std::move(body), now);
    }
  }

  void drain_upstream(Link& link, Clock::time_point now) {
    for (;;) {
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(*link.upstream, std::back_inserter(frames),
                               zmq::recv_flags::dontwait)) {
        return;
      }
      if (auto duration = fire_bulk_trigger(Direction::kToClient, total_bytes(frames))) {
        cut_link(link, *duration, now);
        ++counters_.bulk_cuts;
        ++counters_.lost_to_cuts;
        return;  // the upstream socket is closed now
      }
      inject(link.to_client, std::move(frames), now);
    }
  }

  void learn_name(Link& link, std::string name) {
    if (name.empty()) return;
    if (std::find(names_.begin(), names_.end(), name) == names_.end()) names_.push_back(name);
    link.name = std::move(name);
  }

  bool roll(double probability) {
    return probability > 0 &&
           std::uniform_real_distribution<double>(0.0, 1.0)(random_) < probability;
  }

  // Passes one message through the configured faults into its lane.
  void inject(Lane& lane, std::vector<zmq::message_t> frames, Clock::time_point now) {
    if (roll(options_.drop)) {
      ++counters_.dropped;
      return;
    }
    Held held{std::move(frames), now};
    if (roll(options_.delay)) {
      held.due = now + options_.delay_for;
      ++counters_.delayed;
    }
    std::optional<Held> twin;
    if (roll(options_.duplicate)) {
      twin = Held{copy_of(held.frames), held.due};
      ++counters_.duplicated;
    }
    if (lane.swapped) {
      Held earlier = std::move(*lane.swapped);
      lane.swapped.reset();
      enqueue(lane, std::move(held));
      if (twin) enqueue(lane, std::move(*twin));
      enqueue(lane, std::move(earlier));
      ++counters_.reordered;
      return;
    }
    if (!twin && roll(options_.reorder)) {
      lane.swapped = std::move(held);
      lane.swapped_at = now;
      return;
    }
    enqueue(lane, std::move(held));
    if (twin) enqueue(lane, std::move(*twin));
  }

  // A held message holds back everything behind it, as a slow network would.
  static void enqueue(Lane& lane, Held held) {
    if (!lane.queue.empty()) held.due = std::max(held.due, lane.queue.back().due);
    lane.queue.push_back(std::move(held));
  }

  std::optional<std::chrono::milliseconds> fire_bulk_trigger(Direction direction,
                                                             std::size_t bytes) {
    auto it = std::find_if(triggers_.begin(), triggers_.end(), [&](const BulkTrigger& trigger) {
      return trigger.direction == direction && bytes >= trigger.min_bytes;
    });
    if (it == triggers_.end()) return std::nullopt;
    if (it->skip > 0) {
      --it->skip;
      return std::nullopt;
    }
    auto duration = it->duration;
    triggers_.erase(it);
    return duration;
  }

  void apply_cut_orders(Clock::time_point now) {
    for (const auto& order : cut_orders_) {
      for (auto& [routing, link] : links_) {
        if (!order.client || link.name == *order.client) cut_link(link, order.duration, now);
      }
    }
    cut_orders_.clear();
  }

  void cut_link(Link& link, std::chrono::milliseconds duration, Clock::time_point now) {
    link.upstream.reset();  // linger 0: what the server sent and we did not read is gone
    link.cut_until = std::max(link.cut_until, now + duration);
    for (Lane* lane : {&link.to_server, &link.to_client}) {
      counters_.lost_to_cuts += lane->queue.size() + (lane->swapped ? 1 : 0);
      lane->queue.clear();
      lane->swapped.reset();
    }
    ++counters_.cuts;
  }

  void flush(Clock::time_point now) {
    for (auto& [routing, link] : links_) {
      for (Lane* lane : {&link.to_server, &link.to_client}) {
        if (lane->swapped && now - lane->swapped_at >= kSwapPatience) {
          enqueue(*lane, std::move(*lane->swapped));
          lane->swapped.reset();
        }
      }
      while (!link.to_server.queue.empty() && link.to_server.queue.front().due <= now) {
        if (!link.upstream) open_upstream(link);
        zmq::send_multipart(*link.upstream, link.to_server.queue.front().frames,
                            zmq::send_flags::dontwait);
        link.to_server.queue.pop_front();
        ++counters_.forwarded;
      }
      while (!link.to_client.queue.empty() && link.to_client.queue.front().due <= now) {
        std::vector<zmq::message_t> frames;
        frames.emplace_back(link.routing.data(), link.routing.size());
        for (auto& frame : link.to_client.queue.front().frames) frames.push_back(std::move(frame));
        // An unknown routing id (the client closed that socket) is dropped by the ROUTER.
        zmq::send_multipart(front_, frames, zmq::send_flags::dontwait);
        link.to_client.queue.pop_front();
        ++counters_.forwarded;
      }
    }
  }

  void open_upstream(Link& link) {
    link.upstream = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
    link.upstream->set(zmq::sockopt::linger, 0);
    link.upstream->set(zmq::sockopt::sndhwm, 0);
    link.upstream->set(zmq::sockopt::rcvhwm, 0);
    link.upstream->set(zmq::sockopt::reconnect_ivl, 100);
    link.upstream->connect(server_);
  }

  // ---- set up by the constructor ---------------------------------------------------------

  const std::string server_;
  zmq::context_t context_;
  // Bound by the constructor, then used only by the forwarding thread (starting a thread is
  // the full barrier libzmq asks for when a socket changes threads).
  zmq::socket_t front_;
  std::string endpoint_;

  // ---- shared with the public methods, under mutex_ --------------------------------------

  mutable std::mutex mutex_;
  FaultOptions options_;
  std::mt19937_64 random_;
  std::deque<CutOrder> cut_orders_;
  std::deque<BulkTrigger> triggers_;
  RelayCounters counters_;
  std::vector<std::string> names_;
  std::string failure_;
  // The forwarding thread's own, but it changes them under mutex_ too, in its turns.
  std::map<std::string, Link> links_;

  std::atomic<bool> stopping_{false};
  std::mutex lifecycle_mutex_;  // start() and stop()
  std::thread thread_;
};

FaultRelay::FaultRelay(std::string server, FaultOptions options)
    : impl_(std::make_unique<Impl>(std::move(server), options)) {}

FaultRelay::~FaultRelay() {
  stop();
  impl_->links_.clear();  // closes the DEALERs before the context goes
}

const std::string& FaultRelay::endpoint() const noexcept { return impl_->endpoint_; }

void FaultRelay::start() {
  std::lock_guard lifecycle(impl_->lifecycle_mutex_);
  if (impl_->thread_.joinable()) return;
  impl_->stopping_.store(false);
  impl_->thread_ = std::thread([impl = impl_.get()] { impl->run(); });
}

void FaultRelay::stop() noexcept {
  std::lock_guard lifecycle(impl_->lifecycle_mutex_);
  if (!impl_->thread_.joinable()) return;
  impl_->stopping_.store(true);
  impl_->thread_.join();
}

void FaultRelay::set_faults(const FaultOptions& options) {
  std::lock_guard lock(impl_->mutex_);
  impl_->options_ = options;
}

void FaultRelay::cut(const std::string& client, std::chrono::milliseconds duration) {
  std::lock_guard lock(impl_->mutex_);
  impl_->cut_orders_.push_back({client, duration});
}

void FaultRelay::cut_all(std::chrono::milliseconds duration) {
  std::lock_guard lock(impl_->mutex_);
  impl_->cut_orders_.push_back({std::nullopt, duration});
}

void FaultRelay::cut_on_bulk(Direction direction, std::size_t min_bytes, int skip,
                             std::chrono::milliseconds duration) {
  std::lock_guard lock(impl_->mutex_);
  impl_->triggers_.push_back({direction, min_bytes, skip, duration});
}

int FaultRelay::armed_bulk_cuts() const {
  std::lock_guard lock(impl_->mutex_);
  return static_cast<int>(impl_->triggers_.size());
}

RelayCounters FaultRelay::counters() const {
  std::lock_guard lock(impl_->mutex_);
  return impl_->counters_;
}

std::vector<std::string> FaultRelay::clients() const {
  std::lock_guard lock(impl_->mutex_);
  return impl_->names_;
}

std::string FaultRelay::failure() const {
  std::lock_guard lock(impl_->mutex_);
  return impl_->failure_;
}

}  // namespace conductor::test
