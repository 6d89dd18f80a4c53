// The entry functions of the fuzz targets (fuzz/), shared with tests/unit/regression_test.cpp
// so that a kept crasher replays exactly what the fuzzer ran. Each feed_* hands arbitrary
// bytes to one family of parsers. The contract they check: a parser either succeeds or throws
// conductor::Error; anything else (another exception, a sanitizer report, a broken promise of
// the API, which feed_* throws as std::logic_error) is a bug. Header-only; not thread-safe
// (each call works in the folder it is given, which must exist and belong to the caller).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "conductor/asset_store.hpp"
#include "conductor/config.hpp"
#include "conductor/error.hpp"
#include "conductor/evaluation.hpp"
#include "conductor/package.hpp"
#include "conductor/sha256.hpp"
#include "curve.hpp"
#include "protocol.hpp"
#include "support/piece_stream.hpp"
#include "support/temp_dir.hpp"

namespace conductor::test {

using Bytes = std::span<const std::uint8_t>;

inline std::string_view as_text(Bytes data) {
  return {reinterpret_cast<const char*>(data.data()), data.size()};
}

// Splits fuzz input into ZeroMQ frames: byte 0 says whether a routing-id frame comes first
// (bit 0, as on the server's ROUTER), then each frame is a 2-byte little-endian length and that
// many bytes (fewer when the input ends first). Up to kMaxFrames + 2 frames, so the frame-count
// refusals are reachable too. Returns the index of the signature frame in `first`.
inline std::vector<zmq::message_t> split_frames(Bytes data, std::size_t& first) {
  std::vector<zmq::message_t> frames;
  first = 0;
  if (data.empty()) return frames;
  first = data[0] & 1u;
  data = data.subspan(1);
  while (data.size() >= 2 && frames.size() < protocol::kMaxFrames + 2) {
    const std::size_t length = std::min<std::size_t>(data[0] | (data[1] << 8), data.size() - 2);
    frames.emplace_back(data.data() + 2, length);
    data = data.subspan(2 + length);
  }
  return frames;
}

// Converts the header to T. When that works, T's own encoding must decode and convert again
// to the same encoding: what a peer reads, it can send on unchanged.
template <typename T>
void convert_header(const protocol::Message& message) {
  T value;
  try {
    value = message.as<T>();
  } catch (const Error&) {
    return;  // the header has another shape: refused, which is fine
  }
  std::vector<zmq::message_t> frames;
  frames.push_back(protocol::signature(message.type()));
  frames.push_back(protocol::header(value));
  if (message.payload()) frames.emplace_back(message.payload()->data(), message.payload()->size());
  const zmq::message_t encoded = protocol::header(value);
  zmq::message_t again;
  try {
    again = protocol::header(protocol::decode(frames).as<T>());
  } catch (const Error& e) {
    throw std::logic_error(std::string("a re-encoded header is refused: ") + e.what());
  }
  if (encoded != again) {
    throw std::logic_error("a decoded header does not survive encoding and decoding again");
  }
}

// protocol::decode on the frames of `data`, then as<T>() for every header type.
// Throws ProtocolError when decode refuses the frames.
inline void feed_message(Bytes data) {
  std::size_t first = 0;
  std::vector<zmq::message_t> frames = split_frames(data, first);
  const protocol::Message message = protocol::decode(frames, first);
  if (message.payload() && message.payload()->size() > protocol::kMaxPayloadBytes) {
    throw std::logic_error("decode let a payload above kMaxPayloadBytes through");
  }
  convert_header<protocol::Empty>(message);
  convert_header<protocol::Hello>(message);
  convert_header<protocol::Welcome>(message);
  convert_header<protocol::WireCommand>(message);
  convert_header<protocol::Assign>(message);
  convert_header<protocol::Fetch>(message);
  convert_header<protocol::Chunk>(message);
  convert_header<protocol::Progress>(message);
  convert_header<protocol::ResultOffer>(message);
  convert_header<protocol::Pull>(message);
  convert_header<protocol::Upload>(message);
  convert_header<protocol::Failed>(message);
  convert_header<protocol::Ack>(message);
  convert_header<protocol::Cancel>(message);
  convert_header<protocol::ErrorMessage>(message);
  convert_header<protocol::Control>(message);
  convert_header<protocol::ControlReply>(message);
}

// Small limits, so that a fuzzer finds their edges and never fills the disk.
inline constexpr ExtractLimits kFuzzExtractLimits{64, 1u << 20, 256u << 10};

// `data` as an archive file in `work`, extracted into a fresh folder there with
// kFuzzExtractLimits. Checks extract's promises: nothing appears outside the destination; on a
// refusal the destination is left empty; on success every reported file is a regular file
// there. extract_verified must refuse it, leaving the destination empty, when given another
// hash, and do what extract does when given its own. Throws what extract throws (PackageError,
// IoError).
inline void feed_archive(Bytes data, const std::filesystem::path& work) {
  namespace fs = std::filesystem;
  const fs::path archive = write_file(work / "input.tar", as_text(data));
  const fs::path destination = work / "out";
  const auto fresh_destination = [&] {
    std::error_code ignored;
    fs::remove_all(destination, ignored);
    fs::create_directory(destination);
  };
  const auto check_nothing_escaped = [&] {
    if (list_names(work) != std::vector<std::string>{"input.tar", "out"}) {
      throw std::logic_error("extract wrote outside its destination");
    }
  };
  const auto check_refused_cleanly = [&] {
    check_nothing_escaped();
    if (count_entries(destination) != 0) {
      throw std::logic_error("a refused extraction left files in its destination");
    }
  };

  // extract_verified: with another hash, refused whatever the bytes hold; with the right one,
  // the outcome extract() has.
  fresh_destination();
  try {
    extract_verified(archive, destination, std::string(64, '0'), kFuzzExtractLimits);
    throw std::logic_error("extract_verified took an archive whose hash differs");
  } catch (const Error&) {
    check_refused_cleanly();
  }
  fresh_destination();
  bool is_verified_taken = true;
  try {
    extract_verified(archive, destination, sha256_hex(as_text(data)), kFuzzExtractLimits);
  } catch (const Error&) {
    is_verified_taken = false;
    check_refused_cleanly();
  }

  // The same bytes in memory: the verdict of the file; with the server's held console log,
  // nothing under .conductor/ is ever written.
  const std::string_view text = as_text(data);
  const auto in_memory = ArchiveSource::in_memory(text, "input in memory");
  fresh_destination();
  try {
    extract_verified(in_memory, destination, sha256_hex(text), kFuzzExtractLimits);
    if (!is_verified_taken) throw std::logic_error("an archive in memory was taken, its file refused");
  } catch (const Error&) {
    check_refused_cleanly();
    if (is_verified_taken) throw std::logic_error("an archive in memory was refused, its file taken");
  }
  // The same bytes arriving piece by piece (the piece size from the data, so headers and
  // blocks split anywhere): the verdict of the file.
  fresh_destination();
  {
    PieceStream stream(text, 1 + (data.empty() ? 0 : data[data.size() / 2] * 7u));
    try {
      extract_verified(ArchiveSource::from_stream(stream, "input streamed"), destination,
                       sha256_hex(text), kFuzzExtractLimits);
      if (!is_verified_taken) throw std::logic_error("a streamed archive was taken, its file refused");
    } catch (const Error&) {
      check_refused_cleanly();
      if (is_verified_taken) throw std::logic_error("a streamed archive was refused, its file taken");
    }
  }
  fresh_destination();
  try {
    const ExtractOptions held{".conductor", {".conductor/console.log"}, 1024};
    const auto taken = extract_verified(in_memory, destination, sha256_hex(text),
                                       kFuzzExtractLimits, held);
    if (fs::exists(fs::symlink_status(destination / ".conductor")) ||
        (taken.held.contains(".conductor/console.log") &&
         taken.held.at(".conductor/console.log").size() > 1024)) {
      throw std::logic_error("a held entry was written, or kept beyond max_bytes");
    }
  } catch (const Error&) {
    check_refused_cleanly();
  }

  fresh_destination();
  ExtractStats stats;
  try {
    stats = extract(archive, destination, kFuzzExtractLimits);
  } catch (const Error&) {
    check_refused_cleanly();
    if (is_verified_taken) throw std::logic_error("extract_verified took what extract refused");
    throw;
  }
  if (!is_verified_taken) throw std::logic_error("extract_verified refused what extract took");
  check_nothing_escaped();
  for (const auto& name : stats.files) {
    // Names are reported as stored; on disk "." and empty components ("./a//b/") are gone.
    fs::path written = destination;
    for (const auto& part : fs::path(name)) {
      if (!part.empty() && part != ".") written /= part;
    }
    if (!fs::is_regular_file(fs::symlink_status(written))) {
      throw std::logic_error("extract reported '" + name + "' but there is no such file");
    }
  }
  fs::remove_all(destination);
}

// Runs `load`, taking a conductor::Error as the clean refusal it is.
template <typename Load>
void allow_refusal(Load&& load) {
  try {
    load();
  } catch (const Error&) {
  }
}

// What `load` accepts from `file`, `save` must write to `saved` so that `load` reads it back
// as the same value. A save may refuse (ConfigError: a character XML 1.0 cannot carry).
template <typename Load, typename Save>
void check_round_trip(Load&& load, Save&& save, const std::filesystem::path& file,
                      const std::filesystem::path& saved, const char* what) {
  const auto value = load(file);
  try {
    save(value, saved);
  } catch (const ConfigError&) {
    return;
  }
  if (load(saved) != value) {
    throw std::logic_error(std::string("a loaded ") + what + " does not survive save and load");
  }
}

// `data` as config.xml, as version.xml and as an AssetStore's models/<id>/meta.xml in `work`,
// each loaded (a refusal of one does not stop the others); what load_configuration and
// load_version_file accept must survive save and load.
inline void feed_xml(Bytes data, const std::filesystem::path& work) {
  const auto file = write_file(work / "input.xml", as_text(data));
  const auto saved = work / "saved.xml";
  allow_refusal([&] {
    check_round_trip(load_configuration, save_configuration, file, saved, "configuration");
  });
  allow_refusal([&] {
    check_round_trip(load_version_file, save_version_file, file, saved, "version.xml");
  });
  allow_refusal([&] {
    const AssetStore store(work / "store");
    write_file(store.version_dir("v") / "models" / "m" / "meta.xml", as_text(data));
    (void)store.load_model_meta("v", "m");
  });
}

// `data` as a CURVE allow-list. Every key it yields must be a Z85 key.
// Throws ConfigError when the list is refused.
inline void feed_allow_list(Bytes data, const std::filesystem::path& work) {
  const auto file = write_file(work / "authorized_keys", as_text(data));
  for (const auto& key : load_authorized_keys(file)) {
    if (!is_z85_key(key)) throw std::logic_error("the allow-list yielded a key that is not Z85");
  }
}

// `data` as a model folder's metrics.json, then as its metrics.csv (read_training_metrics),
// then as a results.csv for both dataset types (evaluate_results_csv, which never yields a
// value that is not finite) and through evaluate_model_folder (which never throws).
inline void feed_metrics(Bytes data, const std::filesystem::path& work) {
  namespace fs = std::filesystem;
  const fs::path folder = work / "model";
  std::error_code ignored;
  fs::remove_all(folder, ignored);
  fs::create_directory(folder);
  for (const char* name : {"metrics.json", "metrics.csv"}) {
    write_file(folder / name, as_text(data));
    allow_refusal([&] { (void)read_training_metrics(folder); });
    fs::remove(folder / name);
  }
  const fs::path results = write_file(folder / "results.csv", as_text(data));
  for (const DatasetType type : {DatasetType::kGeneric, DatasetType::kCargo2000}) {
    allow_refusal([&] {
      for (const auto& [name, value] : evaluate_results_csv(results, type).value_or(Metrics{})) {
        if (!std::isfinite(value)) {
          throw std::logic_error("evaluation yielded " + name + " = " + std::to_string(value));
        }
      }
    });
    (void)evaluate_model_folder(folder, type);
  }
}

}  // namespace conductor::test
