// RunningCommands: which process group each slot's command runs in, written down in the
// client's folder so that a client started after its predecessor died without cleaning up
// (SIGKILL, the OOM killer, a crash) stops what that one left running. Every command runs in a
// process group of its own (ProcessExecutor), so a dead client's training would otherwise go on
// holding its CPUs and GPUs while the new client starts more work beside it.
//
// One file per slot, `running/<slot>`, rewritten in place (no file is created per command):
// "<process group> <start time> <boot id> <pid namespace> <token>\n" while a command runs,
// empty otherwise. What is signalled at start-up, and why it is ours:
// - the group leader still runs with the recorded start time (clock ticks after boot,
//   /proc/<pid>/stat field 22): it is the very process, and while it lives its id names our
//   group and no other, so the whole group gets the signals;
// - the leader is gone but processes of the group remain: only those whose environment holds
//   the command's token (`CONDUCTOR_COMMAND_ID=<token>`, set for every command and inherited by
//   what it starts) are signalled, one by one, since the id may since name another group.
// A record of another boot (/proc/sys/kernel/random/boot_id) or another pid namespace (a
// restarted container) is void: its processes cannot be running here.
//
// Not covered: a process that left its group (setsid, setpgid), as a daemon does, and, once
// the leader is gone, one that started with an environment of its own (`env -i`).
// Linux only. record() and clear() of different slots may run on different threads at once.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace conductor {

class RunningCommands {
 public:
  // The environment variable that carries a command's token.
  static constexpr const char* kTokenVariable = "CONDUCTOR_COMMAND_ID";

  // Creates `folder` when missing. Throws IoError naming it.
  explicit RunningCommands(std::filesystem::path folder);

  // A command of `slot`, started with `token` in its environment, runs as the leader of
  // `process_group`. Throws IoError naming what could not be read or written.
  void record(int slot, int process_group, const std::string& token);
  // The slot's command has ended. Throws IoError naming the file.
  void clear(int slot);

  // Stops what an earlier client on this folder left running (see above): SIGTERM to every
  // recorded command at once, SIGKILL to what is left once `grace` has passed, and a wait of up
  // to a second more; so it takes at most `grace` + 1 s, however many slots. Clears every
  // record. Returns one line per record worth a log line: each command stopped (its processes'
  // names, and whether SIGKILL was needed), records that could not be read or cleared, and
  // processes that could not be stopped. Run before any slot starts a command.
  std::vector<std::string> stop_leftovers(std::chrono::milliseconds grace);

 private:
  std::filesystem::path file_of(int slot) const;

  std::filesystem::path folder_;
  std::string boot_id_;        // empty when unreadable: nothing is recorded then
  std::string pid_namespace_;  // "pid:[4026531836]"
};

}  // namespace conductor
