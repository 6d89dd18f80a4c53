// PredictionInputs: each model's prediction inputs, from the model's entries packed once and
// the request's rows packed once, or packed whole per request when they are large.
#include "prediction_inputs.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "conductor/package.hpp"
#include "conductor/sha256.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
using conductor::MemoryBudget;
using conductor::PackageBlob;
using conductor::PredictionInputs;
using conductor::test::pseudo_random;
using conductor::test::read_file;
using conductor::test::TempDir;
using conductor::test::write_file;

constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;

// A stored model's folder as AssetStore leaves it.
fs::path stored_model(const fs::path& root, const std::string& id, const std::string& model) {
  const fs::path folder = root / "models" / id;
  write_file(folder / "model.h5", model);
  write_file(folder / "weights" / "layer.bin", "layer of " + id);
  write_file(folder / "meta.xml", "<Meta/>");
  write_file(folder / "console.log", "Epoch 1/1\n");
  return folder;
}

PredictionInputs::Rows rows_of(const fs::path& root, const std::string& request,
                               const std::string& csv) {
  fs::create_directories(root / request);
  PredictionInputs::Rows rows;
  rows.file = root / request / "predictiondata.csv";
  PredictionInputs::prepare(rows, csv);
  CHECK(read_file(rows.file) == csv);
  return rows;
}

// Every file the inputs unpack to, by name, after their hash was checked.
std::map<std::string, std::string> unpacked(const PackageBlob& blob, const fs::path& folder) {
  fs::create_directories(folder);
  if (blob.bytes) {
    conductor::extract_verified(conductor::ArchiveSource::in_memory(*blob.bytes, "inputs"), folder,
                                blob.sha256);
  } else {
    conductor::extract_verified(blob.file, folder, blob.sha256);
  }
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(folder)) {
    if (entry.is_regular_file()) {
      files[fs::relative(entry.path(), folder).string()] = read_file(entry.path());
    }
  }
  return files;
}

// The inputs of a small model: one archive.
PackageBlob only(const PredictionInputs::Made& made) {
  CHECK_FALSE(made.model.has_value());
  return made.inputs;
}

// Every file a large model's pack and then the inputs unpack to.
std::map<std::string, std::string> unpacked(const PredictionInputs::Made& made,
                                            const fs::path& folder) {
  REQUIRE(made.model.has_value());
  std::map<std::string, std::string> files = unpacked(*made.model, folder / "model");
  for (auto& [name, content] : unpacked(made.inputs, folder / "inputs")) files[name] = content;
  return files;
}

std::map<std::string, std::string> expected(const std::string& model, const std::string& id,
                                            const std::string& csv) {
  return {{"model.h5", model},
          {"model-latest.h5", model},
          {"weights/layer.bin", "layer of " + id},
          {"predictiondata.csv", csv}};
}

}  // namespace

TEST_CASE("small inputs are the model's entries packed once, followed by the rows' archive") {
  TempDir root("conductor-inputs-parts");
  const fs::path model = stored_model(root.path(), "m1", "PredictedBuffer=1");
  auto budget = std::make_shared<MemoryBudget>(16 * kMiB);
  PredictionInputs inputs(root / "packs");

  PredictionInputs::Rows first_rows = rows_of(root.path(), "r1", "a,b\n1,2\n");
  const PackageBlob first =
      only(inputs.make(model, first_rows, root / "r1" / "m1.tar", kMiB, budget));
  REQUIRE(first.bytes != nullptr);
  CHECK_FALSE(fs::exists(root / "r1" / "m1.tar"));
  CHECK(first.size == first.bytes->size());
  CHECK(first.sha256 == conductor::sha256_hex(*first.bytes));
  CHECK(budget->used == first.size);
  CHECK(inputs.is_cached(model));
  CHECK(unpacked(first, root / "out1") == expected("PredictedBuffer=1", "m1", "a,b\n1,2\n"));
  // The rows' archive is packed once per request and ends every model's inputs.
  REQUIRE(first_rows.archive != nullptr);
  CHECK(first.bytes->ends_with(*first_rows.archive));

  // Another request: the model's entries again, other rows.
  PredictionInputs::Rows second_rows = rows_of(root.path(), "r2", "a,b\n3,4\n5,6\n");
  const PackageBlob second =
      only(inputs.make(model, second_rows, root / "r2" / "m1.tar", kMiB, budget));
  REQUIRE(second.bytes != nullptr);
  CHECK(inputs.cached_models() == 1);
  CHECK(inputs.models_packed() == 1);  // the kept entries, not packed again
  CHECK(unpacked(second, root / "out2") == expected("PredictedBuffer=1", "m1", "a,b\n3,4\n5,6\n"));
  const std::size_t model_part = first.size - first_rows.archive->size();
  CHECK(first.bytes->compare(0, model_part, *second.bytes, 0, model_part) == 0);

  // Another model of the same request: its own entries, the same rows' archive.
  const fs::path other = stored_model(root.path(), "m2", "PredictedBuffer=2");
  const PackageBlob third =
      only(inputs.make(other, second_rows, root / "r2" / "m2.tar", kMiB, budget));
  REQUIRE(third.bytes != nullptr);
  CHECK(third.bytes->ends_with(*second_rows.archive));
  CHECK(unpacked(third, root / "out3") == expected("PredictedBuffer=2", "m2", "a,b\n3,4\n5,6\n"));
  CHECK(inputs.models_packed() == 2);
}

TEST_CASE("inputs held in memory count against the budget until their last copy goes") {
  TempDir root("conductor-inputs-budget");
  const fs::path model = stored_model(root.path(), "m1", "weights");
  auto budget = std::make_shared<MemoryBudget>(16 * kMiB);
  PredictionInputs inputs(root / "packs");
  PredictionInputs::Rows rows = rows_of(root.path(), "r1", "x\n1\n");
  std::optional<PackageBlob> blob =
      only(inputs.make(model, rows, root / "r1" / "m1.tar", kMiB, budget));
  CHECK(budget->used == blob->size);
  PackageBlob copy = *blob;
  blob.reset();
  CHECK(budget->used == copy.size);
  copy.bytes.reset();
  CHECK(budget->used == 0);
}

TEST_CASE("a model's own predictiondata.csv gives way to the rows, its own model-latest stays") {
  TempDir root("conductor-inputs-names");
  const fs::path model = stored_model(root.path(), "m1", "weights");
  write_file(model / "predictiondata.csv", "the model's own rows\n");
  write_file(model / "model-latest.h5", "latest weights");
  // Names a plain tar header cannot hold: beyond 100 bytes, and not ASCII.
  const std::string long_name = std::string(150, 'n') + ".txt";
  write_file(model / "deep" / long_name, "long");
  write_file(model / "gr\xc3\xbc\xc3\x9f" "e.txt", "non-ASCII");
  auto budget = std::make_shared<MemoryBudget>(16 * kMiB);
  PredictionInputs inputs(root / "packs");
  PredictionInputs::Rows rows = rows_of(root.path(), "r1", "x\n1\n");
  const PackageBlob blob = only(inputs.make(model, rows, root / "r1" / "m1.tar", kMiB, budget));
  REQUIRE(blob.bytes != nullptr);
  CHECK(inputs.is_cached(model));
  const std::map<std::string, std::string> want = {{"model.h5", "weights"},
                                                   {"model-latest.h5", "latest weights"},
                                                   {"weights/layer.bin", "layer of m1"},
                                                   {"deep/" + long_name, "long"},
                                                   {"gr\xc3\xbc\xc3\x9f" "e.txt", "non-ASCII"},
                                                   {"predictiondata.csv", "x\n1\n"}};
  CHECK(unpacked(blob, root / "out") == want);
}

TEST_CASE("a model's kept entries are packed again once its folder changes") {
  TempDir root("conductor-inputs-changed");
  const fs::path model = stored_model(root.path(), "m1", "old weights");
  auto budget = std::make_shared<MemoryBudget>(16 * kMiB);
  PredictionInputs inputs(root / "packs");
  PredictionInputs::Rows rows = rows_of(root.path(), "r1", "x\n1\n");
  inputs.make(model, rows, root / "r1" / "m1.tar", kMiB, budget);

  CHECK(inputs.models_packed() == 1);

  SUBCASE("rewritten, longer") { write_file(model / "model.h5", "new weights, longer"); }
  SUBCASE("rewritten with the same size and modification time") {
    const auto mtime = fs::last_write_time(model / "model.h5");
    write_file(model / "model.h5", "NEW weights");
    fs::last_write_time(model / "model.h5", mtime);
  }
  const std::string now = read_file(model / "model.h5");
  const PackageBlob again = only(inputs.make(model, rows, root / "r1" / "m1.tar", kMiB, budget));
  CHECK(inputs.models_packed() == 2);
  CHECK(unpacked(again, root / "out") == expected(now, "m1", "x\n1\n"));
  CHECK(inputs.cached_models() == 1);
}

TEST_CASE("large rows of a small model, and inputs beyond the budget, are packed whole") {
  TempDir root("conductor-inputs-whole");
  const fs::path model = stored_model(root.path(), "m1", pseudo_random(4096));
  const std::string model_bytes = read_file(model / "model.h5");
  auto budget = std::make_shared<MemoryBudget>(16 * kMiB);
  PredictionInputs inputs(root / "packs");

  SUBCASE("rows above kMaxRowsForParts") {
    const std::string csv(PredictionInputs::kMaxRowsForParts + 1, '7');
    PredictionInputs::Rows rows = rows_of(root.path(), "r1", csv);
    const PackageBlob blob = only(inputs.make(model, rows, root / "r1" / "m1.tar", kMiB, budget));
    CHECK(inputs.cached_models() == 0);
    CHECK(inputs.models_packed() == 0);
    CHECK(rows.archive == nullptr);
    CHECK(unpacked(blob, root / "out") == expected(model_bytes, "m1", csv));
  }
  SUBCASE("no room left in the budget: to the file as well") {
    auto full = std::make_shared<MemoryBudget>(1000);
    PredictionInputs::Rows rows = rows_of(root.path(), "r1", "x\n1\n");
    const PackageBlob blob = only(inputs.make(model, rows, root / "r1" / "m1.tar", kMiB, full));
    CHECK(blob.bytes == nullptr);
    CHECK(full->used == 0);
    CHECK(inputs.models_packed() == 0);  // not packed apart for nothing
    CHECK(unpacked(blob, root / "out") == expected(model_bytes, "m1", "x\n1\n"));
  }
}

TEST_CASE("kept entries stay within their limit, the least recently used dropped first") {
  TempDir root("conductor-inputs-limit");
  // Each model's entries take 17 KiB packed (model.h5 twice, a pax header each): room for two.
  const fs::path a = stored_model(root.path(), "a", pseudo_random(6000));
  const fs::path b = stored_model(root.path(), "b", pseudo_random(6000));
  const fs::path c = stored_model(root.path(), "c", pseudo_random(6000));
  auto budget = std::make_shared<MemoryBudget>(16 * kMiB);
  PredictionInputs inputs(root / "packs", 40000);
  PredictionInputs::Rows rows = rows_of(root.path(), "r1", "x\n1\n");
  inputs.make(a, rows, root / "r1" / "a.tar", kMiB, budget);
  CHECK(inputs.cached_bytes() > 13000);  // so three never fit
  CHECK(inputs.cached_bytes() < 20000);  // so two do
  inputs.make(b, rows, root / "r1" / "b.tar", kMiB, budget);
  inputs.make(a, rows, root / "r1" / "a.tar", kMiB, budget);  // a used after b
  inputs.make(c, rows, root / "r1" / "c.tar", kMiB, budget);
  CHECK(inputs.cached_models() == 2);
  CHECK(inputs.is_cached(a));
  CHECK_FALSE(inputs.is_cached(b));
  CHECK(inputs.is_cached(c));
  CHECK(inputs.cached_bytes() <= 40000);
  // A dropped model is packed again, the same inputs as ever.
  const PackageBlob again = only(inputs.make(b, rows, root / "r1" / "b.tar", kMiB, budget));
  CHECK(unpacked(again, root / "out") == expected(read_file(b / "model.h5"), "b", "x\n1\n"));
}

TEST_CASE("a large model goes as an archive of its own, kept for later requests, beside the rows") {
  TempDir root("conductor-inputs-large");
  // Beyond the 2 KiB memory limit these tests set: a large model.
  const fs::path model = stored_model(root.path(), "m1", pseudo_random(3000));
  const std::string weights = read_file(model / "model.h5");
  auto budget = std::make_shared<MemoryBudget>(16 * kMiB);
  PredictionInputs inputs(root / "packs");

  PredictionInputs::Rows first_rows = rows_of(root.path(), "r1", "x\n1\n");
  const PredictionInputs::Made first =
      inputs.make(model, first_rows, root / "r1" / "m1.tar", 2048, budget);
  REQUIRE(first.model.has_value());
  CHECK(first.model->file.parent_path() == root / "packs");
  CHECK(first.model->sha256 == conductor::sha256_file(first.model->file));
  CHECK(first.model->size == fs::file_size(first.model->file));
  // The item's own inputs are the request's rows, from memory.
  REQUIRE(first.inputs.bytes != nullptr);
  CHECK(*first.inputs.bytes == *first_rows.archive);
  CHECK(first.inputs.sha256 == conductor::sha256_hex(*first_rows.archive));
  CHECK_FALSE(fs::exists(root / "r1" / "m1.tar"));
  CHECK(unpacked(first, root / "out1") == expected(weights, "m1", "x\n1\n"));

  // The next request: the same pack, not made again; only the rows differ.
  PredictionInputs::Rows second_rows = rows_of(root.path(), "r2", "x\n2\n");
  const PredictionInputs::Made second =
      inputs.make(model, second_rows, root / "r2" / "m1.tar", 2048, budget);
  REQUIRE(second.model.has_value());
  CHECK(second.model->sha256 == first.model->sha256);
  CHECK(second.model->file == first.model->file);
  CHECK(inputs.models_packed() == 1);
  CHECK(inputs.kept_packs() == 1);
  CHECK(second.inputs.sha256 != first.inputs.sha256);
  CHECK(unpacked(second, root / "out2") == expected(weights, "m1", "x\n2\n"));

  // Another large model of the same request: its own pack, the same rows.
  const fs::path other = stored_model(root.path(), "m2", pseudo_random(3001));
  const PredictionInputs::Made third =
      inputs.make(other, second_rows, root / "r2" / "m2.tar", 2048, budget);
  REQUIRE(third.model.has_value());
  CHECK(third.model->sha256 != first.model->sha256);
  CHECK(third.inputs.sha256 == second.inputs.sha256);
  CHECK(inputs.kept_packs() == 2);
}

TEST_CASE("a changed large model gets a new pack; the old file goes once no item names it") {
  TempDir root("conductor-inputs-large-changed");
  const fs::path model = stored_model(root.path(), "m1", pseudo_random(3000));
  auto budget = std::make_shared<MemoryBudget>(16 * kMiB);
  PredictionInputs inputs(root / "packs");
  PredictionInputs::Rows rows = rows_of(root.path(), "r1", "x\n1\n");
  std::optional<PredictionInputs::Made> first =
      inputs.make(model, rows, root / "r1" / "m1.tar", 2048, budget);
  const fs::path old_file = first->model->file;

  write_file(model / "model.h5", pseudo_random(3500));
  const PredictionInputs::Made second =
      inputs.make(model, rows, root / "r1" / "m1.tar", 2048, budget);
  CHECK(inputs.models_packed() == 2);
  CHECK(inputs.kept_packs() == 1);
  CHECK(second.model->file != old_file);
  CHECK(unpacked(second, root / "out") == expected(read_file(model / "model.h5"), "m1", "x\n1\n"));
  CHECK(fs::exists(old_file));  // an item still names it
  first.reset();
  CHECK_FALSE(fs::exists(old_file));  // moved aside at once, wherever the last blob went
  CHECK(fs::exists(second.model->file));
  CHECK(conductor::test::list_names(root / "packs" / "trash").size() == 1);
  inputs.make(model, rows, root / "r1" / "m1.tar", 2048, budget);  // empties the trash
  CHECK(conductor::test::list_names(root / "packs" / "trash").empty());
}

TEST_CASE("large rows beside a large model are packed once per request, zstd where it pays") {
  TempDir root("conductor-inputs-large-rows");
  const fs::path model = stored_model(root.path(), "m1", pseudo_random(3000));
  auto budget = std::make_shared<MemoryBudget>(16 * kMiB);
  PredictionInputs inputs(root / "packs");
  const std::string csv(PredictionInputs::kMaxRowsForParts + 1, '7');
  PredictionInputs::Rows rows = rows_of(root.path(), "r1", csv);
  const PredictionInputs::Made first =
      inputs.make(model, rows, root / "r1" / "m1.tar", 2048, budget);
  // Too large for the 2 KiB memory limit before packing: a file beside the request's rows.
  CHECK(first.inputs.bytes == nullptr);
  CHECK(first.inputs.file == root / "r1" / ".rows.tar");
  CHECK(first.inputs.size < csv.size() / 10);
  CHECK(unpacked(first, root / "out") == expected(read_file(model / "model.h5"), "m1", csv));
  const PredictionInputs::Made again =
      inputs.make(model, rows, root / "r1" / "m1.tar", 2048, budget);
  CHECK(again.inputs.sha256 == first.inputs.sha256);
}

TEST_CASE("large models' packs stay within their limit, the least recently used dropped first") {
  TempDir root("conductor-inputs-pack-limit");
  const fs::path a = stored_model(root.path(), "a", pseudo_random(6000));
  const fs::path b = stored_model(root.path(), "b", pseudo_random(6000));
  const fs::path c = stored_model(root.path(), "c", pseudo_random(6000));
  auto budget = std::make_shared<MemoryBudget>(16 * kMiB);
  PredictionInputs::Rows rows = rows_of(root.path(), "r1", "x\n1\n");
  // Room for two packs (the three differ by a byte or so in size), not three.
  const std::uint64_t one = PredictionInputs(root / "probe")
                                .make(a, rows, root / "r1" / "a.tar", 2048, budget)
                                .model->size;
  PredictionInputs inputs(root / "packs", PredictionInputs::kMaxCachedBytes, one * 5 / 2);
  const fs::path first_a = inputs.make(a, rows, root / "r1" / "a.tar", 2048, budget).model->file;
  inputs.make(b, rows, root / "r1" / "b.tar", 2048, budget);
  inputs.make(a, rows, root / "r1" / "a.tar", 2048, budget);  // a used after b
  inputs.make(c, rows, root / "r1" / "c.tar", 2048, budget);
  CHECK(inputs.kept_packs() == 2);
  CHECK(inputs.models_packed() == 3);
  CHECK(fs::exists(first_a));
  // b was dropped (and, no item naming it, its file is gone): packed again.
  inputs.make(b, rows, root / "r1" / "b.tar", 2048, budget);
  CHECK(inputs.models_packed() == 4);
  inputs.make(a, rows, root / "r1" / "a.tar", 2048, budget);  // empties the trash
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(root / "packs")) files += entry.is_regular_file();
  CHECK(files == 2);
}
