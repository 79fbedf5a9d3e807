// ServedModel over the runtime's ModelInstance: what `pensieve serve` serves.
#pragma once
#include <memory>

#include "server/served_model.h"

namespace pensieve::server {

// Loads the model at path; Error naming the file when it cannot.
std::shared_ptr<ServedModel> load_served_model(const std::string& path, const EngineOptions& opts);

std::shared_ptr<ServedModel> serve_instance(std::shared_ptr<ModelInstance> instance);

}  // namespace pensieve::server
