#include "gpus.hpp"

#include <cstdlib>
#include <regex>
#include <string>

#include "conductor/client.hpp"
#include "conductor/process_executor.hpp"

namespace conductor {

std::vector<std::string> split_gpu_list(std::string_view text) {
  std::vector<std::string> gpus;
  while (!text.empty()) {
    auto comma = text.find(',');
    std::string_view entry = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    auto first = entry.find_first_not_of(" \t");
    if (first == std::string_view::npos) continue;
    entry = entry.substr(first, entry.find_last_not_of(" \t") - first + 1);
    gpus.emplace_back(entry);
  }
  return gpus;
}

std::vector<std::string> gpus_from_nvidia_smi(std::string_view listing) {
  static const std::regex kGpuLine(R"(^GPU (\d+):)");
  // Current drivers: "(UUID: MIG-<uuid>)"; before R470: "(UUID: MIG-GPU-<uuid>/<gi>/<ci>)".
  static const std::regex kMigLine(R"(^\s+MIG\b.*\(UUID:\s*(MIG-[^)\s]+)\))");
  std::vector<std::string> gpus;
  bool gpu_is_split = false;  // the last GPU line's entry was replaced by its MIG instances
  while (!listing.empty()) {
    auto end = listing.find('\n');
    std::string line(listing.substr(0, end));
    listing = end == std::string_view::npos ? std::string_view{} : listing.substr(end + 1);
    std::smatch match;
    if (std::regex_search(line, match, kGpuLine)) {
      gpus.push_back(match[1]);
      gpu_is_split = false;
    } else if (std::regex_search(line, match, kMigLine) && !gpus.empty()) {
      if (!gpu_is_split) gpus.pop_back();  // the GPU holding the instances runs no CUDA itself
      gpus.push_back(match[1]);
      gpu_is_split = true;
    }
  }
  return gpus;
}

std::vector<std::pair<std::string, std::string>> gpu_job_environment(const std::string& gpu,
                                                                     const char* inherited_order) {
  std::vector<std::pair<std::string, std::string>> environment = {{"CUDA_VISIBLE_DEVICES", gpu}};
  if (inherited_order == nullptr || *inherited_order == '\0') {
    environment.emplace_back("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
  }
  return environment;
}

std::vector<std::string> detect_gpus() {
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible && *visible) {
    return split_gpu_list(visible);
  }
  std::string listing;
  ProcessOptions options;
  options.on_line = [&](std::string_view line) {
    listing.append(line);
    listing += '\n';
  };
  options.timeout = std::chrono::seconds(20);
  try {
    if (!ProcessExecutor().run(Command{"nvidia-smi", "-L", {}}, options).succeeded()) return {};
  } catch (const std::exception&) {
    return {};  // no nvidia-smi, or it could not run: no GPU found
  }
  return gpus_from_nvidia_smi(listing);
}

}  // namespace conductor
