// Which GPUs a GPU client runs on: the parsing of `nvidia-smi -L` behind detect_gpus()
// (client.hpp), apart so that tests can feed it text. Pure; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace conductor {

// The indexes `nvidia-smi -L` lists, from lines "GPU <n>: <name> (UUID: ...)"; MIG lines and
// anything else are ignored.
std::vector<std::string> gpus_from_nvidia_smi(std::string_view listing);

}  // namespace conductor
