// RunningCommands: which process group each slot's command runs in, written down in the
// client's folder so that a client started after its predecessor died without cleaning up
// (SIGKILL, the OOM killer, a crash) stops what that one left running. Every command runs in a
// process group of its own (ProcessExecutor), so a dead client's training would otherwise go on
// holding its CPUs and GPUs while the new client starts more work beside it.
//
// One file per slot, `running/<slot>`, rewritten in place (no file is created per command):
// "<process group> <start time> <boot id>\n" while a command runs, empty otherwise. The start
// time is the group leader's, in clock ticks after boot (/proc/<pid>/stat, field 22), so a
// process id reused since by an unrelated process is never signalled; the boot id
// (/proc/sys/kernel/random/boot_id) voids records written before a reboot.
//
// Not covered: a process that left its group (setsid, setpgid), as a daemon does.
// Linux only. record() and clear() of different slots may run on different threads at once.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace conductor {

class RunningCommands {
 public:
  // Creates `folder` when missing. Throws IoError naming it.
  explicit RunningCommands(std::filesystem::path folder);

  // A command of `slot` started as the leader of `process_group`. Throws IoError naming the
  // file; the caller then stops the command, which nobody could stop after a crash.
  void record(int slot, int process_group);
  // The slot's command and its group have ended. Throws IoError naming the file.
  void clear(int slot);

  // Stops what an earlier client on this folder left running: for each recorded group that
  // still holds a live process, SIGTERM to the group, SIGKILL once `grace` has passed, and a
  // wait of up to a second more. Clears every record. Returns one line per record for the log:
  // each group stopped (its processes' names, and whether SIGKILL was needed), and records that
  // could not be read or groups that could not be stopped. Run before any slot starts a command.
  std::vector<std::string> stop_leftovers(std::chrono::milliseconds grace);

 private:
  std::filesystem::path file_of(int slot) const;
  void write(int slot, const std::string& text);

  std::filesystem::path folder_;
  std::string boot_id_;
};

}  // namespace conductor
