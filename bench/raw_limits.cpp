#include "raw_limits.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <latch>
#include <stdexcept>
#include <thread>
#include <zmq.hpp>

#include "bench_support.hpp"
#include "conductor/sha256.hpp"

extern char** environ;

namespace conductor::bench {

namespace fs = std::filesystem;

double raw_zmq_round_trips(int peers, double seconds) {
  zmq::context_t context;
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
  std::atomic<bool> serving{true};
  std::thread echo([&] {
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    while (serving.load()) {
      zmq::poll(&item, 1, std::chrono::milliseconds(50));
      zmq::message_t routing, body;
      while (router.recv(routing, zmq::recv_flags::dontwait)) {
        (void)router.recv(body, zmq::recv_flags::none);
        router.send(routing, zmq::send_flags::sndmore);
        router.send(body, zmq::send_flags::none);
      }
    }
  });
  std::atomic<std::uint64_t> total{0};
  std::vector<std::thread> dealers;
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  for (int i = 0; i < peers; ++i) {
    dealers.emplace_back([&] {
      zmq::socket_t dealer(context, zmq::socket_type::dealer);
      dealer.set(zmq::sockopt::linger, 0);
      dealer.connect(endpoint);
      const std::string text(32, 'x');
      std::uint64_t count = 0;
      while (Clock::now() < deadline) {
        dealer.send(zmq::buffer(text), zmq::send_flags::none);
        zmq::message_t reply;
        (void)dealer.recv(reply, zmq::recv_flags::none);
        ++count;
      }
      total += count;
    });
  }
  const auto started = Clock::now();
  for (auto& dealer : dealers) dealer.join();
  const double elapsed = seconds_since(started);
  serving = false;
  echo.join();
  return static_cast<double>(total.load()) / elapsed;
}

double raw_spawn_rate(const std::vector<std::string>& argv, int parallel, double seconds) {
  std::vector<char*> args;
  for (const auto& argument : argv) args.push_back(const_cast<char*>(argument.c_str()));
  args.push_back(nullptr);
  std::atomic<std::uint64_t> total{0};
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  const auto started = Clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < parallel; ++i) {
    threads.emplace_back([&] {
      std::uint64_t count = 0;
      while (Clock::now() < deadline) {
        pid_t pid = 0;
        if (::posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) break;
        int status = 0;
        ::waitpid(pid, &status, 0);
        ++count;
      }
      total += count;
    });
  }
  for (auto& thread : threads) thread.join();
  return static_cast<double>(total.load()) / seconds_since(started);
}

double raw_parallel_spawn_seconds(const std::vector<std::string>& argv, int parallel) {
  std::vector<char*> args;
  for (const auto& argument : argv) args.push_back(const_cast<char*>(argument.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::latch ready(parallel + 1);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < parallel; ++i) {
    threads.emplace_back([&] {
      ready.arrive_and_wait();
      pid_t pid = 0;
      if (::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ) != 0) {
        ++failures;
        return;
      }
      int status = 0;
      ::waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failures;
    });
  }
  ready.arrive_and_wait();
  const auto started = Clock::now();
  for (auto& thread : threads) thread.join();
  const double elapsed = seconds_since(started);
  posix_spawn_file_actions_destroy(&actions);
  if (failures > 0) {
    throw std::runtime_error(std::to_string(failures.load()) + " runs of " + argv[0] + " failed");
  }
  return elapsed;
}

double raw_tcp_bytes_per_second(std::uint64_t bytes) {
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw std::runtime_error(std::string("loopback listener: ") + std::strerror(errno));
  }
  std::thread sender([&] {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      ::close(fd);
      return;
    }
    std::vector<char> piece(1u << 20, 'x');
    for (std::uint64_t sent = 0; sent < bytes;) {
      const auto want = std::min<std::uint64_t>(piece.size(), bytes - sent);
      const ssize_t n = ::send(fd, piece.data(), want, 0);
      if (n <= 0) break;
      sent += static_cast<std::uint64_t>(n);
    }
    ::close(fd);
  });
  int fd = ::accept(listener, nullptr, nullptr);
  std::vector<char> piece(1u << 20);
  std::uint64_t received = 0;
  const auto started = Clock::now();
  while (received < bytes) {
    const ssize_t n = ::recv(fd, piece.data(), piece.size(), 0);
    if (n <= 0) break;
    received += static_cast<std::uint64_t>(n);
  }
  const double elapsed = seconds_since(started);
  sender.join();
  ::close(fd);
  ::close(listener);
  return static_cast<double>(received) / elapsed;
}

double sha256_bytes_per_second(std::uint64_t bytes) {
  std::vector<char> piece(1u << 20, 'y');
  Sha256 hash;
  const auto started = Clock::now();
  for (std::uint64_t done = 0; done < bytes; done += piece.size()) {
    hash.update(piece.data(), piece.size());
  }
  (void)hash.finish_hex();
  return static_cast<double>(bytes) / seconds_since(started);
}

double raw_file_creations_per_second(const fs::path& folder, int count) {
  const fs::path dir = folder / "creations";
  fs::create_directories(dir);
  const auto started = Clock::now();
  for (int i = 0; i < count; ++i) {
    const fs::path file = dir / std::to_string(i);
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("cannot create " + file.string());
    if (::write(fd, "x", 1) != 1) {
      ::close(fd);
      throw std::runtime_error("cannot write " + file.string());
    }
    ::close(fd);
  }
  const double elapsed = seconds_since(started);
  fs::remove_all(dir);
  return count / elapsed;
}

double durable_write_bytes_per_second(const fs::path& folder, std::uint64_t bytes) {
  const fs::path file = folder / "durable-write.bin";
  std::vector<char> piece(1u << 20, 'z');
  const auto started = Clock::now();
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + file.string());
  for (std::uint64_t done = 0; done < bytes; done += piece.size()) {
    if (::write(fd, piece.data(), piece.size()) < 0) break;
  }
  ::fsync(fd);
  ::close(fd);
  const double elapsed = seconds_since(started);
  fs::remove(file);
  return static_cast<double>(bytes) / elapsed;
}

}  // namespace conductor::bench
