#include "gpus.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "conductor/client.hpp"

using namespace conductor;

TEST_CASE("GPU lists split at commas; nvidia-smi -L listings give the GPU indexes") {
  CHECK(split_gpu_list("0,1, 3") == std::vector<std::string>{"0", "1", "3"});
  CHECK(split_gpu_list(" GPU-8f3a ,,MIG-1 ") == std::vector<std::string>{"GPU-8f3a", "MIG-1"});
  CHECK(split_gpu_list("").empty());
  CHECK(gpus_from_nvidia_smi(
            "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1a2b)\n"
            "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-3c4d)\n"
            "  MIG 1g.10gb     Device  0: (UUID: MIG-5e6f)\n"
            "GPU 12: Tesla T4 (UUID: GPU-7a8b)") == std::vector<std::string>{"0", "1", "12"});
  CHECK(gpus_from_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate\n").empty());
}
