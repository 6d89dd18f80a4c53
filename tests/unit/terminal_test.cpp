// Progress bars and durations (conductor/terminal.hpp) and the client's console: plain lines
// for pipes, lines plus redrawn bars on a terminal.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "client_console.hpp"
#include "conductor/terminal.hpp"

using conductor::activity_bar;
using conductor::ClientConsole;
using conductor::format_duration;
using conductor::ItemProgress;
using conductor::progress_bar;
using conductor::render_progress;
using namespace std::chrono_literals;

namespace {

// What a ClientConsole wrote into a temporary file.
std::string contents(std::FILE* file) {
  std::fflush(file);
  std::rewind(file);
  std::string text;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, file)) > 0;) text.append(buffer, n);
  return text;
}

}  // namespace

TEST_CASE("a progress bar fills in proportion and is full only when done") {
  CHECK(progress_bar(0, 12) == "[..........]");
  CHECK(progress_bar(0.5, 12) == "[#####.....]");
  CHECK(progress_bar(0.999, 12) == "[#########.]");
  CHECK(progress_bar(1, 12) == "[##########]");
  CHECK(progress_bar(7, 12) == "[##########]");
  CHECK(progress_bar(-1, 12) == "[..........]");
  CHECK(progress_bar(std::nan(""), 12) == "[..........]");
  CHECK(progress_bar(0.5, 0) == "[.]");  // never narrower than 3
}

TEST_CASE("an activity bar moves its block to one side and back") {
  CHECK(activity_bar(0, 8) == "[===   ]");
  CHECK(activity_bar(0.25, 8, 0.25) == "[ ===  ]");
  CHECK(activity_bar(0.75, 8, 0.25) == "[   ===]");
  CHECK(activity_bar(1.0, 8, 0.25) == "[  === ]");
  CHECK(activity_bar(1.5, 8, 0.25) == "[===   ]");
  CHECK(activity_bar(100, 4) == "[==]");  // narrower than the block
}

TEST_CASE("durations read in seconds, minutes or hours") {
  CHECK(format_duration(0) == "0.0s");
  CHECK(format_duration(12.34) == "12.3s");
  CHECK(format_duration(59.97) == "1m00s");
  CHECK(format_duration(245) == "4m05s");
  CHECK(format_duration(7384) == "2h03m04s");
  CHECK(format_duration(302400) == "84h00m00s");
  CHECK(format_duration(-5) == "0.0s");
}

TEST_CASE("an item's progress line shows bytes, epochs or the elapsed time") {
  const auto start = std::chrono::steady_clock::now();
  ItemProgress p;
  p.label = "1a2b3c4d training digits";
  p.started = start;
  p.phase = ItemProgress::Phase::kDownloading;
  p.done_bytes = 512 * 1024;
  p.total_bytes = 2 * 1024 * 1024;
  CHECK(render_progress(p, start + 2s, 200) ==
        "1a2b3c4d training digits  downloading [#####...............] 25% of 2.0 MiB, 2.0s");
  p.phase = ItemProgress::Phase::kRunning;
  p.epoch = 3;
  p.total_epochs = 4;
  CHECK(render_progress(p, start + 75s, 200) ==
        "1a2b3c4d training digits  running [###############.....] epoch 3/4, 1m15s");
  p.epoch = p.total_epochs = 0;
  CHECK(render_progress(p, start + 5s, 200) ==
        "1a2b3c4d training digits  running [              ===   ] 5.0s");
  p.phase = ItemProgress::Phase::kUploading;
  p.done_bytes = 300;
  p.total_bytes = 300;
  CHECK(render_progress(p, start + 5s, 200) ==
        "1a2b3c4d training digits  uploading [####################] 100% of 300 B, 5.0s");
  CHECK(render_progress(p, start, 20) == "1a2b3c4d training di");
}

TEST_CASE("a plain console prints lines only, whatever the items do") {
  std::FILE* file = std::tmpfile();
  REQUIRE(file != nullptr);
  {
    ClientConsole console(ClientConsole::Mode::kPlain, file);
    ItemProgress p;
    p.label = "item";
    console.show("item", p);
    console.line("Epoch 1/2");
    console.refresh();
    console.remove("item");
    console.line("done");
  }
  CHECK(contents(file) == "Epoch 1/2\ndone\n");
  std::fclose(file);
}

TEST_CASE("a terminal console keeps one bar per item below the lines and erases it at the end") {
  std::FILE* file = std::tmpfile();
  REQUIRE(file != nullptr);
  ItemProgress p;
  p.label = "item-a";
  p.started = std::chrono::steady_clock::now();
  p.epoch = 1;
  p.total_epochs = 2;
  {
    ClientConsole console(ClientConsole::Mode::kTerminal, file);
    console.line("before");
    console.show("a", p);
    console.line("Epoch 1/2");  // the bar is erased, the line printed, the bar drawn again
    p.label = "item-b";
    console.show("b", p);
    console.remove("a");
  }
  const std::string text = contents(file);
  INFO(text);
  const std::string erase = "\r\x1b[K";
  const std::string up = "\x1b[1A";
  const auto bar_a = text.find("item-a  running [##########..........] epoch 1/2");
  REQUIRE(bar_a != std::string::npos);
  CHECK(text.starts_with("before\n"));
  CHECK(text.find(erase + "Epoch 1/2\nitem-a  running") != std::string::npos);
  // Two bars: the second under the first; removing one erases both lines and redraws one.
  CHECK(text.find("s\nitem-b  running", bar_a) != std::string::npos);
  CHECK(text.find(erase + up + erase + "item-b  running") != std::string::npos);
  CHECK(text.ends_with(erase));  // the destructor leaves no bar behind
}
