#include "bench_support.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "conductor/asset_store.hpp"
#include "conductor/client.hpp"
#include "conductor/server.hpp"
#include "conductor/version.hpp"
#include "random_id.hpp"

extern char** environ;

namespace conductor::bench {

namespace fs = std::filesystem;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

ScratchDir::ScratchDir(const std::string& prefix) {
  std::random_device random;
  path_ = fs::temp_directory_path() /
          (prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(random()));
  fs::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_text(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + file.string());
}

void write_random_file(const fs::path& file, std::uint64_t size) {
  fs::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  std::vector<std::uint64_t> block((1u << 20) / sizeof(std::uint64_t));
  std::uint64_t state = 0x9e3779b97f4a7c15ull ^ size;
  for (std::uint64_t written = 0; written < size;) {
    for (auto& word : block) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      word = state;
    }
    const auto piece =
        std::min<std::uint64_t>(size - written, block.size() * sizeof(std::uint64_t));
    out.write(reinterpret_cast<const char*>(block.data()), static_cast<std::streamsize>(piece));
    written += piece;
  }
  if (!out) throw std::runtime_error("cannot write " + file.string());
}

void write_csv_file(const fs::path& file, std::uint64_t size) {
  fs::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  static constexpr const char* kStatus[] = {"OK", "OK", "OK", "LATE", "OK", "RETRY"};
  std::uint64_t state = 0x2545f4914f6cdd1dull;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  std::string block;
  char line[128];
  for (std::uint64_t written = 0, row = 0; written < size;) {
    block.clear();
    while (block.size() < (1u << 20)) {
      const std::uint64_t r = next();
      const int n = std::snprintf(
          line, sizeof line, "2024-01-%02d %02d:%02d:%02d,sensor-%04d,%d.%03d,%d.%02d,%s\n",
          static_cast<int>(1 + row / 86400 % 28), static_cast<int>(row / 3600 % 24),
          static_cast<int>(row / 60 % 60), static_cast<int>(row % 60), static_cast<int>(r % 500),
          static_cast<int>(r >> 16 & 0xff), static_cast<int>(r >> 24 & 0x3ff) % 1000,
          static_cast<int>(r >> 34 & 0x3f), static_cast<int>(r >> 40 & 0x7f) % 100,
          kStatus[(r >> 48) % 6]);
      block.append(line, static_cast<std::size_t>(n));
      ++row;
    }
    const auto piece = std::min<std::uint64_t>(size - written, block.size());
    out.write(block.data(), static_cast<std::streamsize>(piece));
    written += piece;
  }
  if (!out) throw std::runtime_error("cannot write " + file.string());
}

void write_content_file(const fs::path& file, std::uint64_t size, Content content) {
  if (content == Content::kCsv) {
    write_csv_file(file, size);
  } else {
    write_random_file(file, size);
  }
}

const char* to_string(Content content) { return content == Content::kCsv ? "csv" : "random"; }

namespace {

void write_commands(std::ostringstream& xml, const char* element,
                    const std::vector<std::pair<std::string, std::string>>& commands) {
  if (commands.empty()) {
    xml << "      <" << element << " />\n";
    return;
  }
  xml << "      <" << element << ">\n";
  for (const auto& [file, arguments] : commands) {
    xml << "        <Command>\n          <FileName>" << file << "</FileName>\n"
        << "          <Arguments>" << arguments << "</Arguments>\n        </Command>\n";
  }
  xml << "      </" << element << ">\n";
}

}  // namespace

void write_server_config(const fs::path& server_dir, const std::vector<VersionFixture>& versions,
                         double reserve_nodes) {
  std::ostringstream xml;
  xml << "<?xml version=\"1.0\"?>\n<ConductorConfiguration>\n"
      << "  <Created>2024-01-02T03:04:05.0000000+00:00</Created>\n"
      << "  <LastUpdated>2024-01-02T03:04:05.0000000+00:00</LastUpdated>\n  <Versions>\n";
  for (const auto& version : versions) {
    xml << "    <Version>\n"
        << "      <Created>2024-01-02T03:04:05.0000000+00:00</Created>\n"
        << "      <LastUpdated>2024-01-02T03:04:05.0000000+00:00</LastUpdated>\n"
        << "      <Name>" << version.name << "</Name>\n"
        << "      <DatasetType>Generic</DatasetType>\n      <Status />\n";
    write_commands(xml, "TrainingCommands", version.commands);
    write_commands(xml, "PredictionCommands", version.prediction_commands);
    xml << "      <TargetModels>" << version.target_models << "</TargetModels>\n"
        << "      <ModelPattern>" << version.model_pattern << "</ModelPattern>\n"
        << "    </Version>\n";
    fs::create_directories(server_dir / "assets" / version.name);
  }
  xml << "  </Versions>\n  <ReserveNodes>" << reserve_nodes
      << "</ReserveNodes>\n</ConductorConfiguration>\n";
  write_text(server_dir / "config" / "config.xml", xml.str());
}

namespace {

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t at = 0; (at = text.find(from, at)) != std::string::npos; at += to.size()) {
    text.replace(at, from.size(), to);
  }
  return text;
}

}  // namespace

std::vector<std::string> seed_models(const fs::path& server_dir, const std::string& version,
                                     int count, const std::function<std::string(int)>& model_content) {
  std::vector<std::string> ids;
  if (count <= 0) return ids;
  AssetStore store(server_dir);
  ids.push_back(random_uuid());
  const fs::path staged = store.spool_dir() / "seed";
  write_text(staged / "model.h5", model_content(0));
  Version spec;
  spec.name = version;
  ModelMeta meta;
  meta.item_id = ids.front();
  meta.duration_seconds = 12.5;
  meta.epochs = 10;
  meta.node_name = "seeded";
  meta.metrics = {{"accuracy", 0.9}, {"loss", 0.1}};
  if (store.commit_model(spec, staged, meta, "seeded\n").status != CommitStatus::kStored) {
    throw std::runtime_error("cannot seed a model in " + server_dir.string());
  }
  const fs::path models = store.version_dir(version) / "models";
  std::ifstream in(models / ids.front() / "meta.xml");
  const std::string meta_xml((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  for (int i = 1; i < count; ++i) {
    ids.push_back(random_uuid());
    write_text(models / ids.back() / "meta.xml", replace_all(meta_xml, ids.front(), ids.back()));
    write_text(models / ids.back() / "model.h5", model_content(i));
    write_text(models / ids.back() / "console.log", "seeded\n");
  }
  return ids;
}

ServerOptions server_options(const fs::path& workdir) {
  ServerOptions options;
  options.workdir = workdir;
  options.bind = "tcp://127.0.0.1:*";
  options.log_to_stdout = false;
  return options;
}

ClientOptions client_options(const Server& server, const fs::path& workdir,
                             const std::string& name) {
  ClientOptions options;
  options.server = server.endpoint();
  options.workdir = workdir;
  options.host_name = name;
  options.log_to_stdout = false;
  return options;
}

bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds limit,
              std::chrono::microseconds interval) {
  const auto deadline = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(interval);
  }
  return true;
}

Child::Child(const std::vector<std::string>& arguments, const fs::path& output) {
  std::vector<char*> argv;
  for (const auto& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  const int error = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    throw std::runtime_error("cannot start " + arguments[0] + ": " + std::strerror(error));
  }
}

Child::~Child() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
}

void Child::stop(std::chrono::milliseconds limit) {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  const bool ended = wait_for([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, limit,
                              std::chrono::milliseconds(5));
  if (!ended) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_ = -1;
}

void Child::stop_all(std::vector<std::unique_ptr<Child>>& children) {
  for (auto& child : children) {
    if (child && child->pid_ > 0) ::kill(child->pid_, SIGTERM);
  }
  for (auto& child : children) {
    if (child) child->stop();
  }
}

double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces) start after the last ')'.
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int index = 3; fields >> field; ++index) {
    if (index == 14) utime = std::stoull(field);
    if (index == 15) {
      stime = std::stoull(field);
      break;
    }
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

namespace {

// A "<field>:   <n> kB" line of /proc/<pid>/status, in bytes; 0 when it is not there.
std::uint64_t status_bytes(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  const std::string prefix = field + ":";
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) == 0) return std::stoull(line.substr(prefix.size())) * 1024;
  }
  return 0;
}

}  // namespace

std::uint64_t resident_bytes(pid_t pid) { return status_bytes(pid, "VmRSS"); }

std::uint64_t peak_resident_bytes(pid_t pid) { return status_bytes(pid, "VmHWM"); }

void reset_peak_resident(pid_t pid) {
  const std::string file = "/proc/" + std::to_string(pid) + "/clear_refs";
  std::ofstream out(file);
  out << "5";
  out.flush();
  if (!out) throw std::runtime_error("cannot reset the peak RSS through " + file);
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    throw std::runtime_error(std::string("cannot find a free port: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

fs::path self_path() { return fs::read_symlink("/proc/self/exe"); }

std::vector<std::string> server_command(const fs::path& workdir, const std::string& bind,
                                        const fs::path& endpoint_file) {
  return {CONDUCTOR_SERVER_BIN, "--workdir",       workdir.string(),      "--bind", bind,
          "--quiet",            "--endpoint-file", endpoint_file.string()};
}

std::string wait_for_endpoint_file(const fs::path& file) {
  std::string endpoint;
  if (!wait_for([&] { return static_cast<bool>(std::ifstream(file) >> endpoint); },
                std::chrono::seconds(60))) {
    throw std::runtime_error("the server wrote no " + file.string() + " within 60 s");
  }
  return endpoint;
}

std::vector<std::string> client_command(const std::string& endpoint, const fs::path& workdir,
                                        const std::string& name) {
  return {CONDUCTOR_CLIENT_BIN, endpoint, "--workdir", workdir.string(), "--name", name, "--quiet"};
}

void print_perf_window(const std::string& what, Clock::time_point begin, Clock::time_point end) {
  auto seconds = [](Clock::time_point at) {
    return std::chrono::duration<double>(at.time_since_epoch()).count();
  };
  std::fprintf(stderr, "  perf window %s: %.6f,%.6f\n", what.c_str(), seconds(begin), seconds(end));
}

void print_table(const std::vector<Row>& rows) {
  std::vector<Row> all = {{"benchmark", "conductor", "raw limit", "ratio", "goal", "met", "note"}};
  all.insert(all.end(), rows.begin(), rows.end());
  std::size_t width[6] = {};
  for (const auto& row : all) {
    const std::string* cells[6] = {&row.name,  &row.conductor, &row.raw,
                                   &row.ratio, &row.goal,      &row.met};
    for (int i = 0; i < 6; ++i) width[i] = std::max(width[i], cells[i]->size());
  }
  for (std::size_t r = 0; r < all.size(); ++r) {
    const Row& row = all[r];
    const std::string* cells[6] = {&row.name,  &row.conductor, &row.raw,
                                   &row.ratio, &row.goal,      &row.met};
    std::string line;
    for (int i = 0; i < 6; ++i)
      line += *cells[i] + std::string(width[i] - cells[i]->size() + 2, ' ');
    std::printf("%s%s\n", line.c_str(), row.note.c_str());
    if (r == 0) {
      std::size_t total = 0;
      for (auto w : width) total += w + 2;
      std::printf("%s\n", std::string(total + 4, '-').c_str());
    }
  }
}

std::string format(double value, int decimals) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

std::string format_rate(double per_second, const std::string& unit) {
  const std::string digits = std::to_string(static_cast<long long>(per_second + 0.5));
  std::string grouped;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) grouped += ',';
    grouped += digits[i];
  }
  return grouped + " " + unit;
}

std::string format_bytes_rate(double bytes_per_second) {
  return format(bytes_per_second / 1e9, 2) + " GB/s";
}

std::string format_ms(double seconds) { return format(seconds * 1000, 1) + " ms"; }

}  // namespace conductor::bench
