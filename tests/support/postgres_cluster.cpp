#include "postgres_cluster.hpp"

#include <fcntl.h>
#include <libpq-fe.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <vector>

#include "test_paths.hpp"

namespace nodeform::test {
namespace {

std::mutex g_mutex;  // create_database / exec from several test threads

// Runs argv, output appended to log; true on exit status 0.
bool run(std::vector<std::string> argv, const std::string& log) {
    pid_t pid = ::fork();
    if (pid == 0) {
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
        }
        int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull >= 0) ::dup2(devnull, 0);
        std::vector<char*> args;
        for (auto& a : argv)
            args.push_back(a.data());
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    int status = -1;
    if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return false;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::string tail_of(const std::string& path) {
    std::string text = slurp(path);
    return text.size() > 1500 ? text.substr(text.size() - 1500) : text;
}

}  // namespace

PostgresCluster& PostgresCluster::shared() {
    static PostgresCluster cluster;  // destroyed (stopped) at exit
    return cluster;
}

PostgresCluster::PostgresCluster() {
    // ctest's fixture started one for the whole run: use it, leave it running.
    if (const char* given = std::getenv("NODEFORM_TEST_PG"); given != nullptr && *given != '\0') {
        dir_ = given;
        if (!std::filesystem::exists(dir_ + "/.s.PGSQL.5432"))
            error_ =
                "NODEFORM_TEST_PG=" + dir_ + " has no running cluster (scripts/test-postgres.sh start " + dir_ + ")";
        return;
    }
    std::string pattern = "/tmp/nodeform-pg-XXXXXX";  // short: the socket path is limited to 107 bytes
    if (::mkdtemp(pattern.data()) == nullptr) {
        error_ = "mkdtemp failed";
        return;
    }
    dir_ = pattern;
    script_ = source_dir() + "/scripts/test-postgres.sh";
    const std::string log = dir_ + ".log";
    owned_ = true;
    if (!run({script_, "start", dir_}, log)) error_ = "scripts/test-postgres.sh start failed: " + tail_of(log);
    std::filesystem::remove(log);
}

PostgresCluster::~PostgresCluster() {
    if (owned_) (void)run({script_, "stop", dir_}, "/dev/null");
}

std::string PostgresCluster::url(const std::string& database, const std::string& user) const {
    return "postgresql:///" + database + "?host=" + dir_ + "&user=" + user;
}

std::string PostgresCluster::exec(const std::string& database, const std::string& sql) {
    PGconn* c = PQconnectdb(url(database).c_str());
    std::string error;
    if (PQstatus(c) != CONNECTION_OK) {
        error = PQerrorMessage(c);
    } else {
        PGresult* r = PQexec(c, sql.c_str());
        auto st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) error = PQerrorMessage(c);
        PQclear(r);
    }
    PQfinish(c);
    return error;
}

std::string PostgresCluster::create_database() {
    if (!ok()) return "";
    std::string name;
    {
        std::lock_guard<std::mutex> lock(g_mutex);
        // Unique across the processes sharing ctest's cluster (a pid may come back later in the run).
        name = "t" + std::to_string(::getpid()) + "_" + std::to_string(++databases_) + "_" +
               std::to_string(std::random_device{}() % 1000000);
    }
    if (auto e = exec("postgres", "CREATE DATABASE " + name); !e.empty()) {
        error_ = "CREATE DATABASE failed: " + e;
        return "";
    }
    return url(name);
}

bool PostgresCluster::create_password_role(const std::string& role, const std::string& password,
                                           const std::string& database) {
    // Test-made names and passwords only (no quoting needed beyond the literal).
    return exec("postgres", "CREATE ROLE " + role + " LOGIN IN ROLE password_roles PASSWORD '" + password + "'")
               .empty() &&
           exec(database, "GRANT ALL ON SCHEMA public TO " + role).empty() &&
           exec("postgres", "GRANT ALL ON DATABASE " + database + " TO " + role).empty();
}

}  // namespace nodeform::test
