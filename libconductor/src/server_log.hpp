// ServerLog: the server's log in the original's line format,
//   [<UTC timestamp>] [CL:<clients> QW:<queued> AW:<active>] <message>
// printed to stdout and appended to config/log.txt, which is rotated at 64 MiB (log.1.txt the
// newest of up to 4 older files, log.4.txt the oldest); the latest lines are also kept in memory
// for the dashboard. Owns its spdlog logger (not registered globally, so several servers can
// live in one process). Used only by the server thread.
#pragma once

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace conductor {

struct LogCounts {
  std::size_t clients = 0;
  std::size_t queued = 0;
  std::size_t active = 0;
};

class ServerLog {
 public:
  // Throws IoError when the log file cannot be opened for appending. `max_file_bytes` and
  // `max_old_files`: when a line would take `file` past the first, it is renamed to
  // <stem>.1<ext> (the older ones moving up by one, the last dropped) and begun again.
  ServerLog(const std::filesystem::path& file, bool to_stdout,
            std::size_t max_file_bytes = kMaxFileBytes, std::size_t max_old_files = kMaxOldFiles);
  static constexpr std::size_t kMaxFileBytes = std::size_t{64} << 20;
  static constexpr std::size_t kMaxOldFiles = 4;

  void info(const LogCounts& counts, std::string_view message);
  void warn(const LogCounts& counts, std::string_view message);
  void error(const LogCounts& counts, std::string_view message);

  // The latest lines as written (at most kRecentLines), oldest first, without line ends.
  std::vector<std::string> recent_lines() const;
  static constexpr std::size_t kRecentLines = 100;

 private:
  void write(spdlog::level::level_enum level, const LogCounts& counts, std::string_view message);
  std::shared_ptr<spdlog::logger> logger_;
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> recent_;
};

}  // namespace conductor
