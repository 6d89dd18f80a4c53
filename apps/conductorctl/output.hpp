// conductorctl's readable output: the server's JSON reply bodies (docs/protocol.md) rendered
// as plain aligned tables for people. Free functions and a small Table value; no state shared
// between calls, safe from any thread. Scripts use --json, which prints the body itself.
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

namespace conductor::ctl {

// Rows of cells printed under a header, each column padded to its widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> header);
  // A row shorter than the header is padded with empty cells; a longer one is cut.
  void add_row(std::vector<std::string> cells);
  bool empty() const noexcept { return rows_.empty(); }
  void print(std::ostream& out) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// Up to 6 significant digits, no trailing zeros: 0.25, 3, 1.5e-07.
std::string format_number(double value);

// Prints the reply `body` of `command` (a conductorctl subcommand) for people. A field the
// server did not send prints as empty; throws nlohmann::json::exception only for a body whose
// fields have the wrong types.
void print_readable(const std::string& command, const nlohmann::json& body, std::ostream& out);

// `status --watch`'s view of a status body: a progress bar per version (stored of target
// models), then the clients and the queue as print_readable prints them. Lines of the bars fit
// in `width` columns.
void print_watch_view(const nlohmann::json& body, std::ostream& out, std::size_t width);

}  // namespace conductor::ctl
