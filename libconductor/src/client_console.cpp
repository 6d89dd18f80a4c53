#include "client_console.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include "conductor/terminal.hpp"

namespace conductor {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t kBarWidth = 22;
constexpr std::size_t kDefaultWidth = 80;
constexpr auto kRedrawEvery = 200ms;  // bars move no faster than this
// Terminal controls: carriage return + erase the line; cursor one line up.
constexpr const char* kEraseLine = "\r\x1b[K";
constexpr const char* kLineUp = "\x1b[1A";

std::string format_bytes(std::uint64_t bytes) {
  char text[32];
  const double value = static_cast<double>(bytes);
  if (bytes < (1u << 10)) {
    std::snprintf(text, sizeof text, "%llu B", static_cast<unsigned long long>(bytes));
  } else if (bytes < (1u << 20)) {
    std::snprintf(text, sizeof text, "%.1f KiB", value / (1u << 10));
  } else if (bytes < (1ull << 30)) {
    std::snprintf(text, sizeof text, "%.1f MiB", value / (1u << 20));
  } else {
    std::snprintf(text, sizeof text, "%.2f GiB", value / (1ull << 30));
  }
  return text;
}

std::string percent_of(std::uint64_t done, std::uint64_t total) {
  const int percent = total == 0 ? 100 : static_cast<int>(done * 100 / total);
  return std::to_string(percent) + "% of " + format_bytes(total);
}

// Cuts at a character boundary of UTF-8, so a long label never leaves half a character.
std::string fit(std::string text, std::size_t width) {
  if (text.size() <= width) return text;
  std::size_t cut = width;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  text.resize(cut);
  return text;
}

}  // namespace

std::string render_progress(const ItemProgress& p, Clock::time_point now, std::size_t width) {
  using Phase = ItemProgress::Phase;
  const double elapsed = std::chrono::duration<double>(now - p.started).count();
  std::string phase, bar, detail;
  switch (p.phase) {
    case Phase::kDownloading:
    case Phase::kUploading: {
      phase = p.phase == Phase::kDownloading ? "downloading" : "uploading";
      const double fraction = p.total_bytes == 0 ? 1.0
                                                 : static_cast<double>(p.done_bytes) /
                                                       static_cast<double>(p.total_bytes);
      bar = progress_bar(fraction, kBarWidth);
      detail = percent_of(p.done_bytes, p.total_bytes) + ", ";
      break;
    }
    case Phase::kRunning:
      phase = "running";
      if (p.total_epochs > 0) {
        bar = progress_bar(static_cast<double>(p.epoch) / p.total_epochs, kBarWidth);
        detail = "epoch " + std::to_string(p.epoch) + "/" + std::to_string(p.total_epochs) + ", ";
      } else {
        bar = activity_bar(elapsed, kBarWidth);
      }
      break;
  }
  detail += format_duration(elapsed);
  return fit(p.label + "  " + phase + " " + bar + " " + detail, width);
}

ClientConsole::Mode ClientConsole::detect(int fd) {
  return is_interactive_terminal(fd) ? Mode::kTerminal : Mode::kPlain;
}

ClientConsole::ClientConsole(Mode mode, std::FILE* out) : mode_(mode), out_(out) {}

ClientConsole::~ClientConsole() {
  std::lock_guard lock(mutex_);
  erase_bars();
  std::fflush(out_);
}

void ClientConsole::line(std::string_view text) {
  std::lock_guard lock(mutex_);
  erase_bars();
  std::fwrite(text.data(), 1, text.size(), out_);
  std::fputc('\n', out_);
  draw_bars();
  std::fflush(out_);  // lines reach pipes and log collectors as they come
}

void ClientConsole::show(const std::string& key, const ItemProgress& progress) {
  if (mode_ == Mode::kPlain) return;
  std::lock_guard lock(mutex_);
  auto [it, is_new] = bars_.insert_or_assign(key, progress);
  // Bytes arrive in many small steps: redraw those at a calm pace, anything else at once.
  if (!is_new && Clock::now() - last_draw_ < kRedrawEvery && progress.phase != ItemProgress::Phase::kRunning) {
    return;
  }
  erase_bars();
  draw_bars();
  std::fflush(out_);
}

void ClientConsole::remove(const std::string& key) {
  if (mode_ == Mode::kPlain) return;
  std::lock_guard lock(mutex_);
  if (bars_.erase(key) == 0) return;
  erase_bars();
  draw_bars();
  std::fflush(out_);
}

void ClientConsole::refresh() {
  if (mode_ == Mode::kPlain) return;
  std::lock_guard lock(mutex_);
  if (bars_.empty() || Clock::now() - last_draw_ < kRedrawEvery) return;
  erase_bars();
  draw_bars();
  std::fflush(out_);
}

void ClientConsole::erase_bars() {
  for (std::size_t i = 0; i < drawn_; ++i) {
    if (i > 0) std::fputs(kLineUp, out_);
    std::fputs(kEraseLine, out_);
  }
  drawn_ = 0;
}

void ClientConsole::draw_bars() {
  if (mode_ == Mode::kPlain || bars_.empty()) return;
  const auto now = Clock::now();
  // One column short of the width: writing the last column would wrap on some terminals.
  const std::size_t columns = width() - 1;
  for (const auto& [key, progress] : bars_) {
    if (drawn_ > 0) std::fputc('\n', out_);
    std::fputs(render_progress(progress, now, columns).c_str(), out_);
    ++drawn_;
  }
  last_draw_ = now;
}

std::size_t ClientConsole::width() const {
  winsize size{};
  if (::ioctl(::fileno(out_), TIOCGWINSZ, &size) == 0 && size.ws_col > 10) return size.ws_col;
  return kDefaultWidth;
}

void ConsoleSink::sink_it_(const spdlog::details::log_msg& message) {
  spdlog::memory_buf_t formatted;
  formatter_->format(message, formatted);
  std::string_view text(formatted.data(), formatted.size());
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  console_->line(text);
}

}  // namespace conductor
