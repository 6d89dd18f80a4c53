// Text for terminals: progress bars and durations as conductor-client draws one per item and
// `conductorctl status --watch` one per version, and whether an output is a terminal that can
// take them. Functions without state, safe from any thread.
#pragma once

#include <cstddef>
#include <string>

namespace conductor {

// "[######......]" of `width` characters in all (brackets included, at least 3); `fraction`
// is clamped to 0..1, and NaN counts as 0.
std::string progress_bar(double fraction, std::size_t width);

// A bar for work of unknown length: a short block that moves from side to side, one step per
// `step_seconds` of `elapsed_seconds`, e.g. "[   ===      ]". Same width rules as progress_bar.
std::string activity_bar(double elapsed_seconds, std::size_t width, double step_seconds = 0.25);

// 12.3s under a minute, else 4m05s, or 2h03m04s from an hour on: training runs for days.
// Negative or NaN seconds print as 0.0s.
std::string format_duration(double seconds);

// Whether `fd` is an interactive terminal that understands cursor controls: a tty, and TERM
// set and not "dumb".
bool is_interactive_terminal(int fd);

}  // namespace conductor
