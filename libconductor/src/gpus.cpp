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
  std::vector<std::string> gpus;
  while (!listing.empty()) {
    auto end = listing.find('\n');
    std::string line(listing.substr(0, end));
    listing = end == std::string_view::npos ? std::string_view{} : listing.substr(end + 1);
    std::smatch match;
    if (std::regex_search(line, match, kGpuLine)) gpus.push_back(match[1]);
  }
  return gpus;
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
