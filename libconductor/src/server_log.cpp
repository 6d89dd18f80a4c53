#include "server_log.hpp"

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <vector>

#include "conductor/error.hpp"

namespace conductor {

ServerLog::ServerLog(const std::filesystem::path& file, bool to_stdout, std::size_t max_file_bytes,
                     std::size_t max_old_files) {
  std::vector<spdlog::sink_ptr> sinks;
  try {
    sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
        file.string(), max_file_bytes, max_old_files));
  } catch (const spdlog::spdlog_ex& e) {
    throw IoError("cannot open server log '" + file.string() + "': " + e.what());
  }
  recent_ = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(kRecentLines);
  sinks.push_back(recent_);
  if (to_stdout) sinks.push_back(std::make_shared<spdlog::sinks::stdout_sink_mt>());
  logger_ = std::make_shared<spdlog::logger>("conductor-server", sinks.begin(), sinks.end());
  // Level names are not part of the original's format; warnings and errors say so in the text.
  logger_->set_pattern("[%Y-%m-%dT%H:%M:%S.%eZ] %v", spdlog::pattern_time_type::utc);
  logger_->flush_on(spdlog::level::info);
}

void ServerLog::info(const LogCounts& counts, std::string_view message) {
  write(spdlog::level::info, counts, message);
}

void ServerLog::warn(const LogCounts& counts, std::string_view message) {
  write(spdlog::level::warn, counts, message);
}

void ServerLog::error(const LogCounts& counts, std::string_view message) {
  write(spdlog::level::err, counts, message);
}

std::vector<std::string> ServerLog::recent_lines() const {
  auto lines = recent_->last_formatted();
  for (auto& line : lines) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  }
  return lines;
}

void ServerLog::write(spdlog::level::level_enum level, const LogCounts& counts,
                      std::string_view message) {
  const char* prefix = level == spdlog::level::warn ? "warning: "
                       : level == spdlog::level::err ? "error: "
                                                     : "";
  logger_->log(level, "[CL:{} QW:{} AW:{}] {}{}", counts.clients, counts.queued, counts.active,
               prefix, message);
}

}  // namespace conductor
