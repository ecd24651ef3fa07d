// load_site(): the example site, resolution rules, secrets and their redaction, reporting of every error.
#include <gtest/gtest.h>
#include <algorithm>

#include <filesystem>
#include <fstream>

#include "nodeform/canonical_json.hpp"
#include "nodeform/site/site.hpp"
#include "test_paths.hpp"

namespace nodeform::site {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string example_dir() {
    return test::source_dir() + "/examples/site";
}
std::string minimal_dir() {
    return test::data_dir() + "/valid/minimal";
}

// A copy of tests/data/valid/minimal that a test may edit.
class SiteCopy {
  public:
    SiteCopy() : dir_(temp_.path() + "/site") { fs::copy(minimal_dir(), dir_, fs::copy_options::recursive); }
    const std::string& dir() const { return dir_; }
    void put(const std::string& file, const std::string& text) const { test::write_text(dir_ + "/" + file, text); }

  private:
    test::TempDir temp_;
    std::string dir_;
};

LoadOptions no_env() {
    LoadOptions options;
    options.getenv = [](const std::string&) { return std::optional<std::string>(); };
    return options;
}

std::string joined(const LoadResult& result) {
    std::string out;
    for (const auto& d : result.diagnostics)
        out += d.to_string() + "\n";
    return out;
}

TEST(ExampleSite, LoadsWithEveryNode) {
    auto result = load_site(example_dir());
    ASSERT_TRUE(result.ok()) << joined(result);
    const Site& site = *result.site;
    EXPECT_EQ(site.info.name, "lab");
    EXPECT_EQ(site.info.domain, "lab.example.net");
    EXPECT_EQ(site.info.naming.max_length, 32);
    ASSERT_EQ(site.info.placements.size(), 2u);
    EXPECT_EQ(site.info.placements[0].hosts, (std::vector<std::string>{"pve1", "pve2"}));
    ASSERT_EQ(site.info.proxmox.size(), 1u);
    EXPECT_EQ(site.info.proxmox[0].token_secret, "00000000-fake-4000-8000-000000000000");
    for (const char* name : {"demo-01", "web-01", "web-02", "mon-01", "db-01"}) {
        ASSERT_EQ(site.nodes.count(name), 1u) << name;
        const Node& node = site.nodes.at(name);
        EXPECT_EQ(node.digest, canonical_digest(node.resolved));
        EXPECT_EQ(node.resolved["identity"], name);
    }
    EXPECT_EQ(site.digest.rfind("sha256:", 0), 0u);
}

TEST(ExampleSite, DemoNodeIsLoopbackFriendly) {
    auto result = load_site(example_dir());
    ASSERT_TRUE(result.ok()) << joined(result);
    const Node& demo = result.site->nodes.at("demo-01");
    EXPECT_EQ(demo.posture_name, "dev");
    EXPECT_EQ(demo.auth.method, AuthMethod::network);
    EXPECT_EQ(demo.auth.allowed_cidrs.front(), "127.0.0.0/8");
    EXPECT_TRUE(demo.resolved["stacks"].empty());
    EXPECT_FALSE(demo.resolved.contains("upgrade"));  // no policy declared: none, and the spec stays as it was
    EXPECT_EQ(demo.resolved["network"], json({{"mode", "dhcp"}}));
    EXPECT_EQ(demo.fqdn, "demo-01.lab.example.net");
}

TEST(ExampleSite, NodeSettingsComeFromPresetPlacementAndOverrides) {
    auto result = load_site(example_dir());
    ASSERT_TRUE(result.ok()) << joined(result);
    const Node& web2 = result.site->nodes.at("web-02");
    EXPECT_EQ(web2.sizing.cores, 1);
    EXPECT_EQ(web2.sizing.memory_mb, 2048);    // override
    EXPECT_EQ(web2.sizing.balloon_mb, 512);    // preset
    EXPECT_EQ(web2.placement.site, "rack-a");  // found from the host
    EXPECT_EQ(web2.placement.vmid, 1012);
    EXPECT_EQ(web2.decommission, DecommissionPolicy::requires_migration_first);
    EXPECT_EQ(web2.resolved["network"]["address"], "10.20.0.12/24");
    EXPECT_EQ(web2.resolved["upgrade"], json({{"policy", "security"}, {"interval_s", 86400}}));
    const Node& mon = result.site->nodes.at("mon-01");
    EXPECT_FALSE(mon.placement.vmid.has_value());
    EXPECT_EQ(mon.auth.method, AuthMethod::site_token);
    EXPECT_EQ(mon.auth.site_token, "fake-site-token-0123456789abcdef");
    EXPECT_EQ(mon.hostname, "mon-01");
}

// defaults.locale reaches every node's resolved spec; without it the spec has no locale (left as the image has it).
TEST(Resolve, SiteLocaleIsEveryNodesLocaleAndABadOneIsRefused) {
    SiteCopy site;
    EXPECT_FALSE(load_site(site.dir()).site->nodes.at("node-01").resolved.contains("locale"));
    std::string text = test::slurp(site.dir() + "/site.yaml");
    site.put("site.yaml", text.replace(text.find("  domain:"), 0, "  locale: de_DE.UTF-8\n"));
    auto result = load_site(site.dir());
    ASSERT_TRUE(result.ok()) << joined(result);
    EXPECT_EQ(result.site->nodes.at("node-01").resolved["locale"], "de_DE.UTF-8");
    text = test::slurp(site.dir() + "/site.yaml");
    site.put("site.yaml", text.replace(text.find("de_DE.UTF-8"), 11, "de DE;x"));
    auto bad = load_site(site.dir());
    EXPECT_NE(joined(bad).find("site.yaml:4:11: defaults.locale: 'de DE;x' is not a locale name like en_US.UTF-8"),
              std::string::npos)
        << joined(bad);
}

// The resolver's output is what the agent's copy of the contract accepts: every resolved spec of the example
// site and of the valid corpus matches shared/defs/resolved-spec.schema.json.
TEST(Resolve, EveryResolvedSpecMatchesTheResolvedSpecSchema) {
    std::size_t checked = 0;
    for (const auto& dir : {example_dir(), minimal_dir()}) {
        auto loaded = load_site(dir);
        ASSERT_TRUE(loaded.ok()) << dir;
        for (const auto& [id, node] : loaded.site->nodes) {
            auto problems = validate_resolved_spec(node.resolved, id);
            EXPECT_TRUE(problems.empty()) << id << ": " << (problems.empty() ? "" : problems[0].to_string());
            ++checked;
        }
    }
    EXPECT_GE(checked, 7u);
    auto wrong = validate_resolved_spec(nlohmann::json::parse(R"({"schema_version":1,"identity":"n","files":"x"})"),
                                        "spec.json");
    ASSERT_EQ(wrong.size(), 1u);
    EXPECT_EQ(wrong[0].field, "files");
}

// The kinds of issue 16 as the example site resolves them: defaults written out, the password a secret.
TEST(Resolve, NewResourceKindsGetTheirDefaultsAndThePasswordIsASecret) {
    auto result = load_site(example_dir());
    ASSERT_TRUE(result.ok()) << joined(result);
    const json& demo = result.site->nodes.at("demo-01").resolved;
    EXPECT_EQ(demo["timezone"], "Europe/Berlin");
    EXPECT_EQ(demo["users"][0]["password"].get<std::string>().rfind("$6$fakesalt$", 0), 0u);
    EXPECT_NE(std::find(demo["secret_paths"].begin(), demo["secret_paths"].end(), "/users/0/password"),
              demo["secret_paths"].end());
    EXPECT_EQ(demo["users"][1].contains("password"), false);
    EXPECT_EQ(demo["users"][1]["locked"], false);
    EXPECT_EQ(demo["users"][2]["locked"], true);
    EXPECT_EQ(
        demo["directories"][0],
        json({{"path", "/srv/demo"}, {"mode", "2770"}, {"owner", "alice"}, {"group", "demo"}, {"recursive", false}}));
    EXPECT_EQ(demo["symlinks"][0],
              json({{"path", "/etc/demo/current.conf"}, {"target", "app.conf"}, {"state", "present"}}));
    EXPECT_EQ(demo["sysctl"], json::parse(R"([{"name":"net.ipv4.ip_forward","value":"0"},
                                              {"name":"vm.swappiness","value":"10"}])"));
    EXPECT_EQ(demo["kernel_modules"], json::parse(R"([{"name":"overlay"}])"));
    const json& timer = demo["timers"][0];
    EXPECT_EQ(timer["persistent"], true);
    EXPECT_EQ(timer["user"], "alice");
    EXPECT_EQ(timer["command"][0], "/usr/bin/find");
    bool templated = false;
    for (const auto& f : demo["files"])
        if (f["path"] == "/etc/demo/node.conf") templated = f["template"] == true;
    EXPECT_TRUE(templated);
    for (const auto& f : demo["files"])
        if (f["path"] == "/etc/motd") {
            EXPECT_FALSE(f.contains("template"));
        }
    const json& db = result.site->nodes.at("db-01").resolved;
    const json& stacks = db["stacks"];
    ASSERT_EQ(stacks.size(), 3u);
    EXPECT_EQ(stacks[0]["state"], "present");
    EXPECT_EQ(stacks[2], json({{"name", "legacy-exporter"}, {"state", "absent"}, {"remove_files", false}}));
}

TEST(Resolve, AppliesPostureDefaultsAndShorthands) {
    auto result = load_site(minimal_dir());
    ASSERT_TRUE(result.ok()) << joined(result);
    const json& r = result.site->nodes.at("node-01").resolved;
    EXPECT_EQ(r["schema_version"], 1);
    EXPECT_EQ(r["spec"], "base");
    EXPECT_EQ(r["posture"], "dev");
    EXPECT_EQ(r["site"], "test");
    EXPECT_EQ(r["timezone"], "Etc/UTC");
    EXPECT_EQ(r["hostname"],
              json({{"hostname", "node-01"}, {"domain", "test.example.net"}, {"fqdn", "node-01.test.example.net"}}));
    // Posture packages follow the spec's.
    ASSERT_EQ(r["packages"].size(), 3u);
    EXPECT_EQ(r["packages"][0], json({{"name", "hello"}, {"state", "present"}}));
    EXPECT_EQ(r["packages"][2]["name"], "sudo");
    // Users: defaults filled, sudo_nopasswd from the posture, key text from secrets.
    const json& alice = r["users"][0];
    EXPECT_EQ(alice["shell"], "/bin/bash");
    EXPECT_EQ(alice["home"], "/home/alice");
    EXPECT_EQ(alice["sudo_nopasswd"], true);
    EXPECT_EQ(alice["state"], "present");
    EXPECT_EQ(alice["ssh_keys"][0].get<std::string>().rfind("ssh-ed25519 ", 0), 0u);
    // enable: shorthand → objects with a unit suffix; restart names normalized.
    EXPECT_EQ(r["services"], json::array({{{"name", "cron.service"}, {"enabled", true}, {"running", true}}}));
    EXPECT_EQ(r["files"][0]["restart"], json::array({"cron.service"}));
    EXPECT_EQ(r["files"][0]["mode"], "0644");
    EXPECT_EQ(r["files"][0]["owner"], "root");
    // Health defaults and durations in seconds.
    EXPECT_EQ(r["health"][0], json({{"name", "ssh"},
                                    {"type", "tcp"},
                                    {"host", "127.0.0.1"},
                                    {"port", 22},
                                    {"interval_s", 30},
                                    {"timeout_s", 5}}));
    EXPECT_EQ(r["health"][1]["interval_s"], 60);
    EXPECT_EQ(r["health"][1]["path"], "/");
    EXPECT_EQ(r["apply"],
              json({{"trigger", "schedule"}, {"interval_s", 300}, {"splay_s", 60}, {"drift", "remediate"}}));
    // Literal env values stay; secret references become values and are listed.
    EXPECT_EQ(r["stacks"][0]["env"]["MODE"], "production");
    EXPECT_EQ(r["stacks"][0]["env"]["DB_PASSWORD"], "db-SECRETVALUE-0003");
    EXPECT_EQ(r["secret_paths"], json::array({"/stacks/0/env/DB_PASSWORD", "/users/0/ssh_keys/0"}));
}

TEST(Resolve, NodeWithoutPresetOrPlacementGetsDefaults) {
    auto result = load_site(minimal_dir());
    ASSERT_TRUE(result.ok()) << joined(result);
    const Node& node = result.site->nodes.at("node-02");
    EXPECT_EQ(node.sizing.cores, 1);
    EXPECT_EQ(node.sizing.memory_mb, 1024);
    EXPECT_EQ(node.placement.endpoint, "");
    EXPECT_EQ(node.type, "vm");
    EXPECT_EQ(node.decommission, DecommissionPolicy::requires_final_backup);
}

TEST(Resolve, PostureSshBlockBecomesAnSshdDropIn) {
    SiteCopy site;
    site.put("specs/base.yaml", "schema_version: 1\naccess:\n  posture: prod\n");
    auto result = load_site(site.dir());
    ASSERT_TRUE(result.ok()) << joined(result);
    const json& files = result.site->nodes.at("node-01").resolved["files"];
    ASSERT_EQ(files.size(), 1u);
    EXPECT_EQ(files[0]["path"], "/etc/ssh/sshd_config.d/50-nodeform.conf");
    EXPECT_EQ(files[0]["restart"], json::array({"ssh.service"}));
    std::string content = files[0]["content"];
    EXPECT_NE(content.find("PermitRootLogin no\n"), std::string::npos);
    EXPECT_NE(content.find("PasswordAuthentication no\n"), std::string::npos);
    EXPECT_NE(content.find("Port 22\n"), std::string::npos);
    EXPECT_EQ(result.site->nodes.at("node-01").auth.method, AuthMethod::node_token);
}

TEST(Resolve, ServiceListFormAndComposeMapping) {
    SiteCopy site;
    site.put("specs/base.yaml", R"(schema_version: 1
access: {posture: dev}
platform:
  services:
    - docker
    - {name: apache2, enabled: false}
    - {name: fstrim.timer, enabled: true, running: false}
  stacks:
    - name: s
      compose:
        services: {app: {image: "local/app"}}
)");
    auto result = load_site(site.dir());
    ASSERT_TRUE(result.ok()) << joined(result);
    const json& r = result.site->nodes.at("node-01").resolved;
    EXPECT_EQ(r["services"][0], json({{"name", "docker.service"}, {"enabled", true}, {"running", true}}));
    EXPECT_EQ(r["services"][1], json({{"name", "apache2.service"}, {"enabled", false}, {"running", false}}));
    EXPECT_EQ(r["services"][2], json({{"name", "fstrim.timer"}, {"enabled", true}, {"running", false}}));
    EXPECT_EQ(r["stacks"][0]["compose"], "services:\n  app:\n    image: \"local/app\"\n");
}

TEST(Resolve, UserGroupsNotDeclaredAreAdded) {
    SiteCopy site;
    site.put("specs/base.yaml", R"(schema_version: 1
access:
  posture: dev
  users: [{name: bob, groups: [docker, ops]}]
  groups: [{name: ops}]
)");
    auto result = load_site(site.dir());
    ASSERT_TRUE(result.ok()) << joined(result);
    const json& groups = result.site->nodes.at("node-01").resolved["groups"];
    EXPECT_EQ(groups,
              json::array({{{"name", "ops"}, {"state", "present"}}, {{"name", "docker"}, {"state", "present"}}}));
}

TEST(Resolve, IsDeterministicAndDigestTracksContent) {
    auto a = load_site(minimal_dir());
    auto b = load_site(minimal_dir());
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(render_node(a.site->nodes.at("node-01"), true), render_node(b.site->nodes.at("node-01"), true));
    EXPECT_EQ(a.site->digest, b.site->digest);

    SiteCopy site;
    site.put("secrets.yaml",
             "ssh_keys:\n  alice: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOther alice\"\n"
             "proxmox:\n  pve: x\nstack_env:\n  db_password: other\n");
    auto c = load_site(site.dir());
    ASSERT_TRUE(c.ok()) << joined(c);
    EXPECT_NE(c.site->nodes.at("node-01").digest, a.site->nodes.at("node-01").digest);
    EXPECT_NE(c.site->digest, a.site->digest);
}

TEST(Redaction, ReplacesEverySecretPath) {
    auto result = load_site(minimal_dir());
    ASSERT_TRUE(result.ok()) << joined(result);
    const Node& node = result.site->nodes.at("node-01");
    std::string revealed = render_node(node, true);
    std::string redacted = render_node(node, false);
    EXPECT_NE(revealed.find("db-SECRETVALUE-0003"), std::string::npos);
    EXPECT_EQ(redacted.find("SECRETVALUE"), std::string::npos);
    EXPECT_EQ(redacted.find("ssh-ed25519"), std::string::npos);
    EXPECT_EQ(redacted.back(), '\n');
    json r = json::parse(redacted);
    EXPECT_EQ(r["stacks"][0]["env"]["DB_PASSWORD"], "[REDACTED]");
    EXPECT_EQ(r["users"][0]["ssh_keys"][0], "[REDACTED]");
    EXPECT_EQ(r["stacks"][0]["env"]["MODE"], "production");
    EXPECT_EQ(redacted, canonical_dump(redact_resolved(node.resolved)) + "\n");
}

TEST(Redaction, ToleratesBadPointers) {
    json doc = {{"a", 1}, {"secret_paths", {"/missing", "not-a-pointer", 3, "/a"}}};
    json out = redact_resolved(doc);
    EXPECT_EQ(out["a"], "[REDACTED]");
    EXPECT_FALSE(out.contains("missing"));
}

TEST(Secrets, EnvAndFileSources) {
    SiteCopy site;
    site.put("secret-files/db.txt", "from-file\n");
    site.put("secrets.yaml",
             "ssh_keys:\n  alice: env:ALICE_KEY\nproxmox:\n  pve: file:secret-files/db.txt\n"
             "stack_env:\n  db_password: file:" +
                 site.dir() + "/secret-files/db.txt\n");
    LoadOptions options;
    options.getenv = [](const std::string& name) -> std::optional<std::string> {
        if (name == "ALICE_KEY")
            return std::string("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEnvKeyEnvKeyEnvKey alice@env");
        return std::nullopt;
    };
    auto result = load_site(site.dir(), options);
    ASSERT_TRUE(result.ok()) << joined(result);
    const json& r = result.site->nodes.at("node-01").resolved;
    EXPECT_EQ(r["users"][0]["ssh_keys"][0], "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEnvKeyEnvKeyEnvKey alice@env");
    EXPECT_EQ(r["stacks"][0]["env"]["DB_PASSWORD"], "from-file");  // trailing newline dropped
    EXPECT_EQ(result.site->info.proxmox[0].token_secret, "from-file");
}

TEST(Secrets, NeverAppearInDiagnostics) {
    SiteCopy site;
    // A multi-line "key" and a too-short site token: both rejected without echoing the value.
    site.put("secrets.yaml",
             "ssh_keys:\n  alice: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIabcabcabc\\nTOPSECRET\"\n"
             "site_token: TOPSECRET2\nproxmox:\n  pve: x\nstack_env:\n  db_password: y\n");
    site.put("postures/dev.yaml", "auth:\n  method: site_token\n");
    auto result = load_site(site.dir(), no_env());
    ASSERT_FALSE(result.ok());
    std::string all = joined(result);
    EXPECT_NE(all.find("secrets.yaml:2:10: ssh_keys.alice: the secret value must be a single line"), std::string::npos)
        << all;
    EXPECT_NE(all.find("site_token is shorter than 16 characters"), std::string::npos) << all;
    EXPECT_EQ(all.find("TOPSECRET"), std::string::npos) << all;
}

TEST(Diagnostics, EveryErrorIsReportedInFileOrder) {
    SiteCopy site;
    site.put("specs/base.yaml", R"(schema_version: 1
acess: {}
access:
  posture: nope
  users:
    - name: Bad
      shel: /bin/sh
      ssh_keys: [nobody]
platform:
  packages: [UPPER, ok-name, ok-name]
  flies: []
)");
    site.put("presets/small.yaml", "cores: 0\nmemory_mb: 1024\ndisk_gb: 10\nextra: 1\n");
    auto result = load_site(site.dir());
    ASSERT_FALSE(result.ok());
    std::string all = joined(result);
    for (const char* expected : {
             "presets/small.yaml:1:8: cores: must be at least 1 (got 0)",
             "presets/small.yaml:4:1: extra: unknown key 'extra'",
             "specs/base.yaml:2:1: acess: unknown key 'acess'; did you mean 'access'?",
             "specs/base.yaml:4:12: access.posture: posture 'nope' does not exist",
             "specs/base.yaml:6:13: access.users[0].name: 'Bad' must start with a lowercase letter or '_'",
             "specs/base.yaml:7:7: access.users[0].shel: unknown key 'shel'; did you mean 'shell'?",
             "specs/base.yaml:8:18: access.users[0].ssh_keys[0]: ssh key 'nobody' is not defined",
             "specs/base.yaml:10:14: platform.packages[0]: 'UPPER' is not a Debian package name",
             "specs/base.yaml:10:30: platform.packages[2]: duplicate package 'ok-name' (first defined at line 10)",
             "specs/base.yaml:11:3: platform.flies: unknown key 'flies'; did you mean 'files'?",
         }) {
        EXPECT_NE(all.find(expected), std::string::npos) << "missing: " << expected << "\n" << all;
    }
    EXPECT_GE(result.diagnostics.size(), 10u);
    for (std::size_t i = 1; i < result.diagnostics.size(); ++i) {
        const auto& a = result.diagnostics[i - 1];
        const auto& b = result.diagnostics[i];
        EXPECT_LE(std::tie(a.file, a.line, a.column), std::tie(b.file, b.line, b.column));
    }
    json as_json = diagnostics_to_json(result.diagnostics);
    ASSERT_EQ(as_json.size(), result.diagnostics.size());
    EXPECT_EQ(as_json[0]["file"], "presets/small.yaml");
    EXPECT_EQ(as_json[0]["line"], 1);
    EXPECT_EQ(as_json[0]["field"], "cores");
}

TEST(Diagnostics, AllUnknownKeysOfOneMappingAreReported) {
    SiteCopy site;
    site.put("presets/small.yaml", "cores: 1\nmemory_mb: 1024\ndisk_gb: 10\ncpu: 2\nram: 3\n");
    auto result = load_site(site.dir());
    std::string all = joined(result);
    EXPECT_NE(all.find("presets/small.yaml:4:1: cpu: unknown key 'cpu'"), std::string::npos) << all;
    EXPECT_NE(all.find("presets/small.yaml:5:1: ram: unknown key 'ram'"), std::string::npos) << all;
}

TEST(Diagnostics, ToStringFormat) {
    Diagnostic d{"specs/web.yaml", 3, 7, "access.posture", "posture 'x' does not exist"};
    EXPECT_EQ(d.to_string(), "specs/web.yaml:3:7: access.posture: posture 'x' does not exist");
    Diagnostic whole{"site.yaml", 0, 0, "", "missing"};
    EXPECT_EQ(whole.to_string(), "site.yaml:0:0: -: missing");
}

TEST(Load, MissingDirectoryIsAnError) {
    auto result = load_site("/nonexistent/nodeform-site");
    ASSERT_FALSE(result.ok());
    EXPECT_NE(result.diagnostics[0].message.find("is not a directory"), std::string::npos);
}

TEST(Load, LeadingZeroScalarsStayStrings) {
    SiteCopy site;
    site.put("specs/base.yaml", R"(schema_version: 1
access: {posture: dev}
platform:
  files:
    - {path: /etc/a, content: "", mode: 0600}
    - {path: /etc/b, content: "", mode: "755"}
)");
    auto result = load_site(site.dir());
    ASSERT_TRUE(result.ok()) << joined(result);
    const json& files = result.site->nodes.at("node-01").resolved["files"];
    EXPECT_EQ(files[0]["mode"], "0600");
    EXPECT_EQ(files[1]["mode"], "0755");
}

TEST(Resolve, DiskFreeTakesMinFreeMbAloneOrWithAPercent) {
    SiteCopy site;
    std::string spec = test::slurp(minimal_dir() + "/specs/base.yaml");
    std::string disk = "    type: disk_free\n";
    spec.replace(spec.find(disk), disk.size(),
                 disk +
                     "    min_free_mb: 512\n  - name: both\n    type: disk_free\n    path: /var\n"
                     "    min_free_mb: 100\n    min_free_percent: 5\n");
    site.put("specs/base.yaml", spec);
    auto result = load_site(site.dir(), no_env());
    ASSERT_TRUE(result.ok()) << joined(result);
    const json& r = result.site->nodes.at("node-01").resolved;
    EXPECT_EQ(r["health"][1]["min_free_mb"], 512);
    EXPECT_FALSE(r["health"][1].contains("min_free_percent")) << "min_free_mb alone is the only threshold";
    EXPECT_EQ(r["health"][2]["min_free_mb"], 100);
    EXPECT_EQ(r["health"][2]["min_free_percent"], 5);
    EXPECT_TRUE(validate_resolved_spec(r, "node-01").empty());
    // On another type of check the key is refused, naming it.
    spec.replace(spec.find("    port: 22\n"), 13, "    port: 22\n    min_free_mb: 1\n");
    site.put("specs/base.yaml", spec);
    auto bad = load_site(site.dir(), no_env());
    EXPECT_FALSE(bad.ok());
    EXPECT_NE(joined(bad).find("min_free_mb"), std::string::npos) << joined(bad);
}

TEST(Resolve, DurationsUseTheSharedGrammarInWholeSeconds) {
    SiteCopy site;
    std::string spec = test::slurp(minimal_dir() + "/specs/base.yaml");
    spec.replace(spec.find("interval: 1m"), 12, "interval: 60000ms");
    spec.replace(spec.find("interval: 5m"), 12, "interval: 1d\n  splay: 5min");
    site.put("specs/base.yaml", spec);
    auto result = load_site(site.dir(), no_env());
    ASSERT_TRUE(result.ok()) << joined(result);
    const json& r = result.site->nodes.at("node-01").resolved;
    EXPECT_EQ(r["health"][1]["interval_s"], 60);
    EXPECT_EQ(r["apply"]["interval_s"], 86400);
    EXPECT_EQ(r["apply"]["splay_s"], 300);

    spec.replace(spec.find("interval: 60000ms"), 17, "interval: 1500ms");
    site.put("specs/base.yaml", spec);
    result = load_site(site.dir(), no_env());
    ASSERT_FALSE(result.ok());
    EXPECT_NE(joined(result).find("'1500ms' is not a duration"), std::string::npos) << joined(result);
}

TEST(Load, ReadmeAndHiddenFilesAreIgnored) {
    SiteCopy site;
    site.put("specs/README.md", "notes\n");
    site.put("nodes/.gitkeep", "");
    auto result = load_site(site.dir());
    EXPECT_TRUE(result.ok()) << joined(result);
}

// A fleet's nodes/ holds thousands of node files (4,096 was once the cap); beyond 65,536 entries a directory is
// refused before any file in it is read.
TEST(Load, AFleetSizedNodesDirectoryLoadsAndOneBeyondTheCapIsRefused) {
    SiteCopy site;
    const std::string node = "spec: base\n";
    for (int i = 0; i < 5000; ++i)
        site.put("nodes/fleet-" + std::to_string(10000 + i) + ".yaml", node);
    auto result = load_site(site.dir(), no_env());
    ASSERT_TRUE(result.ok()) << joined(result).substr(0, 2000);
    EXPECT_EQ(result.site->nodes.size(), 5002u);

    std::map<std::string, std::string> files;
    for (const auto& entry : fs::recursive_directory_iterator(minimal_dir()))
        if (entry.is_regular_file())
            files[fs::relative(entry.path(), minimal_dir()).string()] =
                std::string(std::istreambuf_iterator<char>(std::ifstream(entry.path()).rdbuf()), {});
    for (int i = 0; i < 65536; ++i)
        files["nodes/fleet-" + std::to_string(100000 + i) + ".yaml"] = node;
    auto refused = load_site_files(files, no_env());
    EXPECT_FALSE(refused.ok());
    EXPECT_NE(joined(refused).find("nodes:0:0: -: more than 65536 entries; split the site"), std::string::npos)
        << joined(refused).substr(0, 2000);
}

TEST(Load, StricterNamingPolicyAppliesToHostnames) {
    SiteCopy site;
    std::string text =
        "schema_version: 1\nname: test\nnaming:\n  max_length: 7\n"
        "defaults:\n  domain: test.example.net\ncontroller:\n  url: https://127.0.0.1:8443\n";
    site.put("site.yaml", text);
    site.put("nodes/node-01.yaml", "spec: base\n");
    auto result = load_site(site.dir());
    ASSERT_TRUE(result.ok()) << joined(result);  // "node-01" is exactly 7
    site.put("nodes/node-001.yaml", "spec: base\n");
    result = load_site(site.dir());
    ASSERT_FALSE(result.ok());
    EXPECT_NE(
        joined(result).find("nodes/node-001.yaml:1:1: -: node name 'node-001' (from the file name) is longer than 7"),
        std::string::npos)
        << joined(result);
}

TEST(QemuProvider, ANodeWithProviderQemuGetsTheLocalPlacement) {
    SiteCopy site;
    site.put("nodes/node-02.yaml",
             "spec: base\nprovider: qemu\nqemu:\n  template: /images/nodeform-template.qcow2\n"
             "  state_dir: /var/lib/nodeform/qemu\n  accel: tcg\n");
    auto result = load_site(site.dir(), no_env());
    ASSERT_TRUE(result.ok()) << joined(result);
    const NodePlacement& p = result.site->nodes.at("node-02").placement;
    EXPECT_EQ(p.provider, "qemu");
    EXPECT_EQ(p.qemu.template_image, "/images/nodeform-template.qcow2");
    EXPECT_EQ(p.qemu.state_dir, "/var/lib/nodeform/qemu");
    EXPECT_EQ(p.qemu.accel, "tcg");
    EXPECT_EQ(p.pve_node, "local");
    EXPECT_EQ(p.storage, "/var/lib/nodeform/qemu");
    EXPECT_EQ(p.bridge, "user");
    EXPECT_EQ(result.site->nodes.at("node-01").placement.provider, "proxmox");
}

TEST(QemuProvider, BadQemuSettingsAreReportedAtTheirPosition) {
    SiteCopy site;
    site.put("nodes/node-02.yaml",
             "spec: base\nprovider: qemu\nqemu:\n  template: images/t.qcow2\n  state_dir: /var/lib/../q,x\n");
    auto result = load_site(site.dir(), no_env());
    ASSERT_FALSE(result.ok());
    std::string all = joined(result);
    EXPECT_NE(all.find("nodes/node-02.yaml:4:13: qemu.template: 'images/t.qcow2' is not an absolute path"),
              std::string::npos)
        << all;
    EXPECT_NE(all.find("nodes/node-02.yaml:5:14: qemu.state_dir: '/var/lib/../q,x' contains a comma"),
              std::string::npos)
        << all;

    site.put("nodes/node-02.yaml", "spec: base\nprovider: qemu\n");
    all = joined(load_site(site.dir(), no_env()));
    EXPECT_NE(all.find("nodes/node-02.yaml:2:11: provider: provider 'qemu' needs a qemu section"), std::string::npos)
        << all;

    site.put("nodes/node-02.yaml", "spec: base\nqemu:\n  template: /t.qcow2\n  state_dir: /q\n");
    all = joined(load_site(site.dir(), no_env()));
    EXPECT_NE(all.find("nodes/node-02.yaml:3:3: qemu: qemu settings need 'provider: qemu'"), std::string::npos) << all;

    site.put("nodes/node-02.yaml",
             "spec: base\nprovider: qemu\nqemu:\n  template: /t.qcow2\n  state_dir: /q\n"
             "  accel: hvf\n");
    all = joined(load_site(site.dir(), no_env()));
    EXPECT_NE(all.find("nodes/node-02.yaml:6:10: qemu.accel"), std::string::npos) << all;
}

}  // namespace
}  // namespace nodeform::site
