#include "gpus.hpp"

#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "conductor/client.hpp"

using namespace conductor;

TEST_CASE(
    "GPU lists split at commas; nvidia-smi -L listings give the GPU indexes, MIG instances for a "
    "split GPU") {
  CHECK(split_gpu_list("0,1, 3") == std::vector<std::string>{"0", "1", "3"});
  CHECK(split_gpu_list(" GPU-8f3a ,,MIG-1 ") == std::vector<std::string>{"GPU-8f3a", "MIG-1"});
  CHECK(split_gpu_list("").empty());
  CHECK(gpus_from_nvidia_smi("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1a2b)\n"
                             "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-3c4d)\n"
                             "  MIG 1g.10gb     Device  0: (UUID: MIG-5e6f)\n"
                             "GPU 12: Tesla T4 (UUID: GPU-7a8b)") ==
        std::vector<std::string>{"0", "MIG-5e6f", "12"});
  CHECK(gpus_from_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate\n").empty());
}

TEST_CASE("each MIG instance nvidia-smi -L lists is a slot of its own, named by its UUID") {
  // An A100 split in three, a whole one, and one in the format of drivers before R470.
  const std::string listing =
      "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)\n"
      "  MIG 3g.20gb     Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)\n"
      "  MIG 2g.10gb     Device  1: (UUID: MIG-cba663e8-9bed-5b7e-9530-1d8cc36b6b8a)\n"
      "  MIG 1g.5gb      Device  2: (UUID: MIG-1a2b3c4d-0000-1111-2222-333344445555)\n"
      "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-0b0b0b0b-1111-2222-3333-444455556666)\n"
      "GPU 2: A100-SXM4-40GB (UUID: GPU-e91edf3b-b297-37c1-a2a7-7601c3a3e3a4)\n"
      "  MIG 7g.40gb Device 0: (UUID: MIG-GPU-e91edf3b-b297-37c1-a2a7-7601c3a3e3a4/0/0)\n";
  CHECK(gpus_from_nvidia_smi(listing) ==
        std::vector<std::string>{"MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f",
                                 "MIG-cba663e8-9bed-5b7e-9530-1d8cc36b6b8a",
                                 "MIG-1a2b3c4d-0000-1111-2222-333344445555", "1",
                                 "MIG-GPU-e91edf3b-b297-37c1-a2a7-7601c3a3e3a4/0/0"});
  // A MIG line with no GPU line above it names nothing to replace: ignored.
  CHECK(gpus_from_nvidia_smi("  MIG 1g.5gb Device 0: (UUID: MIG-1)\n").empty());
}

TEST_CASE(
    "a GPU job gets CUDA_DEVICE_ORDER=PCI_BUS_ID, so that an index is nvidia-smi's, unless the "
    "client has one") {
  using Environment = std::vector<std::pair<std::string, std::string>>;
  CHECK(gpu_job_environment("1", nullptr) ==
        Environment{{"CUDA_VISIBLE_DEVICES", "1"}, {"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}});
  CHECK(gpu_job_environment("MIG-1", "") ==
        Environment{{"CUDA_VISIBLE_DEVICES", "MIG-1"}, {"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}});
  // The user's choice stays: the job inherits it from the client's environment.
  CHECK(gpu_job_environment("0", "FASTEST_FIRST") == Environment{{"CUDA_VISIBLE_DEVICES", "0"}});
}
