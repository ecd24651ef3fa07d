#pragma once
// A throwaway PostgreSQL 15 cluster (docs/testing.md; scripts/test-postgres.sh): initdb + pg_ctl, listening only
// on a unix socket in its directory. Under ctest one cluster serves the run ($NODEFORM_TEST_PG names its directory,
// fixture "postgres"); a binary run by hand starts its own on first use and stops it (pg_ctl stop -m fast) at exit.
// Each test takes a fresh database.
#include <string>

namespace nodeform::test {

class PostgresCluster {
  public:
    // The binary's cluster, started on the first call; error() says why when it could not start.
    static PostgresCluster& shared();
    bool ok() const { return error_.empty(); }
    const std::string& error() const { return error_; }
    // A new empty database; its URL (unix socket, superuser, trust) or "" on failure (error() says why).
    std::string create_database();
    // URL of database as user (no password in it).
    std::string url(const std::string& database, const std::string& user = "nodeform") const;
    // A login role that must authenticate with password (scram-sha-256 in pg_hba.conf) and may use database.
    bool create_password_role(const std::string& role, const std::string& password, const std::string& database);
    // Runs sql in database as the superuser; "" or PostgreSQL's error.
    std::string exec(const std::string& database, const std::string& sql);
    const std::string& socket_dir() const { return dir_; }

    ~PostgresCluster();
    PostgresCluster(const PostgresCluster&) = delete;
    PostgresCluster& operator=(const PostgresCluster&) = delete;

  private:
    PostgresCluster();
    std::string dir_;
    std::string script_;
    std::string error_;
    bool owned_ = false;
    int databases_ = 0;
};

}  // namespace nodeform::test
