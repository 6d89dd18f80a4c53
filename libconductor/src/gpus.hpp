// Which GPUs a GPU client runs on: the parsing of `nvidia-smi -L` behind detect_gpus()
// (client.hpp), apart so that tests can feed it text. Pure; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conductor {

// The GPUs `nvidia-smi -L` lists, one slot each: the index from "GPU <n>: <name> (UUID: ...)",
// or, for a GPU split into MIG instances, the UUID of each instance from the lines below it
// ("  MIG 1g.10gb Device 0: (UUID: MIG-...)") instead of the GPU itself, which CUDA cannot use
// then. Anything else is ignored.
std::vector<std::string> gpus_from_nvidia_smi(std::string_view listing);

// What a job on `gpu` gets in its environment: CUDA_VISIBLE_DEVICES=gpu and, unless the
// client's own environment has a CUDA_DEVICE_ORDER (`inherited_order`, null or empty when not),
// CUDA_DEVICE_ORDER=PCI_BUS_ID: CUDA numbers GPUs fastest first by default, nvidia-smi in PCI
// bus order, and on a machine with mixed GPUs an index would name another GPU than logged.
std::vector<std::pair<std::string, std::string>> gpu_job_environment(const std::string& gpu,
                                                                     const char* inherited_order);

}  // namespace conductor
