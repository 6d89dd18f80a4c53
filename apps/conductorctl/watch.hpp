// `conductorctl status --watch`: asks for the server's status every interval and shows it
// until Ctrl-C (SIGINT) or SIGTERM. On an interactive terminal each view replaces the one
// before in place; elsewhere (a pipe, a file) each view follows a "--- <UTC time>" line, plain
// text without terminal controls. With --json each view is one line of JSON. Runs on the
// caller's thread and installs its own SIGINT and SIGTERM handlers for the duration.
#pragma once

#include <chrono>
#include <functional>
#include <ostream>
#include <string>

namespace conductor::ctl {

struct WatchOptions {
  std::chrono::milliseconds interval{1000};
  bool json = false;      // one JSON document per line instead of tables
  bool terminal = false;  // redraw in place (stdout is an interactive terminal)
  std::string server;     // shown in the heading
};

// `fetch` returns a status reply body; a TransportError from it (no reply) is shown and the
// next view tried again, any other exception ends the watch and propagates. Returns once a
// signal asked it to stop.
void watch_status(const std::function<std::string()>& fetch, const WatchOptions& options,
                  std::ostream& out);

}  // namespace conductor::ctl
