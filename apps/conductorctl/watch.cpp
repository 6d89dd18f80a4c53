#include "watch.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "conductor/error.hpp"
#include "output.hpp"

namespace conductor::ctl {

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int) { g_stop.store(true); }

// Handlers for the watch's lifetime. SA_RESETHAND: a second Ctrl-C ends the program at once,
// even while a request waits for its timeout.
class StopSignals {
 public:
  StopSignals() {
    g_stop.store(false);
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    action.sa_flags = SA_RESETHAND;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &old_int_);
    ::sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignals() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

// Terminal controls: cursor home, erase to the end of the line, erase below, erase all.
constexpr const char* kHome = "\x1b[H";
constexpr const char* kEraseLineEnd = "\x1b[K";
constexpr const char* kEraseBelow = "\x1b[J";
constexpr const char* kEraseScreen = "\x1b[2J";

std::string utc_now() {
  std::time_t now = std::time(nullptr);
  std::tm parts{};
  ::gmtime_r(&now, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

std::size_t terminal_width() {
  winsize size{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 20) return size.ws_col;
  return 80;
}

// One view as text: the status, or why there is none this time.
std::string render_view(const std::function<std::string()>& fetch, const WatchOptions& options) {
  std::ostringstream view;
  std::string body;
  try {
    body = fetch();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kTransport) throw;
    if (options.json) return nlohmann::json{{"error", e.what()}}.dump() + "\n";
    view << "conductorctl: " << e.what() << "; trying again\n";
    return view.str();
  }
  if (options.json) return nlohmann::json::parse(body).dump() + "\n";
  print_watch_view(nlohmann::json::parse(body), view,
                   options.terminal ? terminal_width() : std::size_t{80});
  return view.str();
}

// Waits up to `interval`, returning early once a stop signal came.
void pause(std::chrono::milliseconds interval) {
  const auto until = std::chrono::steady_clock::now() + interval;
  while (!g_stop.load() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

void watch_status(const std::function<std::string()>& fetch, const WatchOptions& options,
                  std::ostream& out) {
  StopSignals signals;
  const bool redraw = options.terminal && !options.json;
  if (redraw) out << kEraseScreen;
  while (!g_stop.load()) {
    const std::string view = render_view(fetch, options);
    if (g_stop.load()) break;
    if (options.json) {
      out << view;
    } else if (redraw) {
      // Each line ends by erasing what an older, longer view left there; below, all of it.
      out << kHome << options.server << " at " << utc_now() << ", every "
          << options.interval.count() / 1000.0 << " s; Ctrl-C ends" << kEraseLineEnd << "\n"
          << kEraseLineEnd << "\n";
      std::istringstream lines(view);
      for (std::string line; std::getline(lines, line);) out << line << kEraseLineEnd << "\n";
      out << kEraseBelow;
    } else {
      out << "--- " << options.server << " at " << utc_now() << "\n" << view << "\n";
    }
    out.flush();
    pause(options.interval);
  }
  out.flush();
}

}  // namespace conductor::ctl
