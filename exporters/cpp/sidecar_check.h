// Checks of an engine's JSON sidecar that need neither TensorRT nor a GPU (so they are tested on CPU):
// the plan's sha256, the strip-plan flag and the TensorRT version it was built with.
#pragma once

#include <string>

namespace rfr {

// Lower-case hex SHA-256 of `bytes` (FIPS 180-4).
std::string sha256_hex(const std::string& bytes);

// The string value of "key": "value" in the sidecar (first occurrence; the sidecar is flat enough), or "".
std::string json_string(const std::string& json, const std::string& key);

// Whether the sidecar holds "key": true.
bool json_true(const std::string& json, const std::string& key);

// Whether `built` (Python's tensorrt.__version__, e.g. "10.16.0.72") is the library version `here`
// ("MAJOR.MINOR.PATCH" of the headers): equal, or `here` followed by a further ".BUILD" component.
bool same_tensorrt_version(const std::string& built, const std::string& here);

// Throws std::runtime_error, one line, when the sidecar does not describe a runnable `plan` for TensorRT
// `here`: another TensorRT version, a weight-stripped plan, or plan bytes whose sha256 differs.
void check_plan(const std::string& sidecar, const std::string& plan, const std::string& here);

}  // namespace rfr
