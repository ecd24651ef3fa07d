#include "nodeform/controller/store/store_location.hpp"

#include <sys/stat.h>

#include "nodeform/atomic_file.hpp"
#include "nodeform/controller/store/postgres.hpp"
#include "nodeform/controller/store/sqlite.hpp"

namespace nodeform::controller {

std::string StoreLocation::describe() const {
    return postgres() ? pg::redact_url(postgres_url) : sqlite_path;
}

Result<StoreLocation> store_location(const ControllerConfig& config) {
    StoreLocation where;
    if (!pg::is_postgres_url(config.store)) {
        if (!config.store_password_file.empty())
            return make_error("store-password-file is set but store is not a postgresql:// URL");
        if (config.state.empty()) return make_error("--state DIR is required (or state: in the config file)");
        where.sqlite_path = sqlite::database_path(config.state);
        return where;
    }
    where.postgres_url = config.store;
    if (config.store_password_file.empty()) return where;
    const auto& file = config.store_password_file;
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0)
        return make_error("store-password-file " + file + ": cannot read it (does it exist?)");
    if ((st.st_mode & S_IROTH) != 0)
        return make_error("store-password-file " + file + ": readable by every user; chmod 600 " + file);
    auto text = read_file(file, 4096);
    if (!text) return make_error("store-password-file " + file + ": cannot read it (size at most 4 KiB)");
    std::string password = *text;
    while (!password.empty() && (password.back() == '\n' || password.back() == '\r'))
        password.pop_back();
    if (password.empty()) return make_error("store-password-file " + file + ": empty");
    if (password.find('\n') != std::string::npos)
        return make_error("store-password-file " + file + ": holds more than one line (the password alone)");
    where.postgres_password = std::move(password);
    return where;
}

Result<std::unique_ptr<Store>> open_store(const StoreLocation& where) {
    if (where.postgres()) return open_postgres_store(where.postgres_url, where.postgres_password);
    return open_sqlite_store(where.sqlite_path);
}

Result<std::unique_ptr<lifecycle::LifecycleStore>> open_lifecycle_store(const StoreLocation& where) {
    if (where.postgres()) return lifecycle::open_postgres_lifecycle_store(where.postgres_url, where.postgres_password);
    return lifecycle::LifecycleStore::open(where.sqlite_path);
}

}  // namespace nodeform::controller
