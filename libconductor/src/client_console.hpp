// ClientConsole: what conductor-client prints on its standard output. Plain mode prints every
// log line and every line of the commands as it comes (pipes, files, log collectors). Terminal
// mode prints the same lines, and below them one progress bar per item that it redraws in
// place: the bar scrolls down as lines arrive. Thread-safe: the network thread, the job thread
// and the logger's sink all call it; one ClientConsole per output stream.
#pragma once

#include <spdlog/sinks/base_sink.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace conductor {

// One item's progress as the terminal shows it.
struct ItemProgress {
  enum class Phase { kDownloading, kRunning, kUploading };
  std::string label;  // e.g. "1a2b3c4d training my-version"
  Phase phase = Phase::kRunning;
  std::uint64_t done_bytes = 0;   // downloading, uploading
  std::uint64_t total_bytes = 0;
  int epoch = 0;                  // running: the training monitor's "Epoch i/n", 0 = unknown
  int total_epochs = 0;
  std::chrono::steady_clock::time_point started;  // of the item
};

// One line of at most `width` characters: the label, the phase, a bar (of bytes or epochs,
// or moving with the elapsed time when neither is known) and the numbers.
std::string render_progress(const ItemProgress& progress, std::chrono::steady_clock::time_point now,
                            std::size_t width);

class ClientConsole {
 public:
  enum class Mode { kPlain, kTerminal };
  // kTerminal when `fd` is an interactive terminal (is_interactive_terminal).
  static Mode detect(int fd);

  ClientConsole(Mode mode, std::FILE* out);
  ~ClientConsole();  // erases the bars it drew
  ClientConsole(const ClientConsole&) = delete;
  ClientConsole& operator=(const ClientConsole&) = delete;

  Mode mode() const noexcept { return mode_; }
  // Prints one line (without its line end).
  void line(std::string_view text);
  // Sets the bar of `key`; bars are drawn in the order of their keys. In plain mode nothing
  // is drawn.
  void show(const std::string& key, const ItemProgress& progress);
  void remove(const std::string& key);
  // Redraws the bars when they last moved a while ago (elapsed time, the activity bar).
  void refresh();

 private:
  void erase_bars();  // with mutex_ held
  void draw_bars();   // with mutex_ held
  std::size_t width() const;

  const Mode mode_;
  std::FILE* const out_;
  std::mutex mutex_;
  std::map<std::string, ItemProgress> bars_;
  std::size_t drawn_ = 0;  // bar lines on the screen now
  std::chrono::steady_clock::time_point last_draw_{};
};

// A spdlog sink that hands each formatted log line to a ClientConsole, so log lines and the
// bars never cut into each other.
class ConsoleSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit ConsoleSink(std::shared_ptr<ClientConsole> console) : console_(std::move(console)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& message) override;
  void flush_() override {}

 private:
  std::shared_ptr<ClientConsole> console_;
};

}  // namespace conductor
