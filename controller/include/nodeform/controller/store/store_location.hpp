#pragma once
// Where the controller keeps its state, as its config says: SQLite in STATE/nodeform.db (the default), or a
// PostgreSQL database several controllers share (`store: postgresql://…`, the password from store-password-file
// or libpq's PGPASSWORD / ~/.pgpass). Opens the report store and the lifecycle store there.
#include <memory>
#include <string>

#include "nodeform/controller/config.hpp"
#include "nodeform/controller/lifecycle/lifecycle.hpp"
#include "nodeform/controller/store/store.hpp"
#include "nodeform/result.hpp"

namespace nodeform::controller {

struct StoreLocation {
    std::string sqlite_path;        // STATE/nodeform.db when not PostgreSQL
    std::string postgres_url;       // postgresql://…; empty = SQLite
    std::string postgres_password;  // from store-password-file; empty = libpq's own sources
    bool postgres() const { return !postgres_url.empty(); }
    // For logs and messages: the database path, or the URL without its password.
    std::string describe() const;
};

// Reads config.store and the password file (which must not be readable by every user). Err names the setting.
Result<StoreLocation> store_location(const ControllerConfig& config);
Result<std::unique_ptr<Store>> open_store(const StoreLocation& where);
Result<std::unique_ptr<lifecycle::LifecycleStore>> open_lifecycle_store(const StoreLocation& where);

}  // namespace nodeform::controller
