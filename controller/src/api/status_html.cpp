// The status pages' HTML: pure functions of what the handlers read (docs/controller.md#status-pages).
// Every string from outside goes through text()/append_escaped(); strings from reports are redacted first.
#include <algorithm>
#include <cstdio>
#include <map>
#include <utility>

#include "nodeform/controller/api/server.hpp"
#include "nodeform/controller/api/status_page.hpp"
#include "nodeform/process.hpp"

namespace nodeform::controller {

using json = nlohmann::json;

void append_escaped(std::string& out, std::string_view text) {
    for (char c : text) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            case '\'':
                out += "&#39;";
                break;
            default:
                out += c;
        }
    }
}

std::string html_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size() + 16);
    append_escaped(out, text);
    return out;
}

namespace {

// Most urgent first: what the fleet table sorts by before the identity; a failed lifecycle ranks 3, after these
// first three and before the rest; a status not listed ranks 7.
constexpr std::pair<NodeStatus, int> kUrgency[] = {{NodeStatus::failed, 0},     {NodeStatus::unhealthy, 1},
                                                   {NodeStatus::stale, 2},      {NodeStatus::drifted, 4},
                                                   {NodeStatus::converging, 5}, {NodeStatus::pending, 6}};

int urgency(const FleetRow& row) {
    int rank = 7;
    for (auto [status, r] : kUrgency)
        if (row.status == status) rank = r;
    return rank > 2 && row.lifecycle == "failed" ? 3 : rank;
}

std::string age_text(std::int64_t s) {
    if (s < 0) s = 0;
    if (s < 120) return std::to_string(s) + "s";
    if (s < 2 * 3600) return std::to_string(s / 60) + "m";
    if (s < 2 * 86400) return std::to_string(s / 3600) + "h";
    return std::to_string(s / 86400) + "d";
}

// "sha256:0123456789ab" — enough to tell digests apart at a glance; the full one is in the title.
std::string short_digest(const std::string& digest) {
    auto colon = digest.find(':');
    std::size_t keep = (colon == std::string::npos ? 0 : colon + 1) + 12;
    return digest.size() > keep ? digest.substr(0, keep) + "…" : digest;
}

const char* const kCss = R"(
:root{--bg:#f6f7f9;--fg:#1d2330;--mut:#667085;--line:#e3e6eb;--card:#fff;--ok:#16794c;--okb:#dcf3e6;--warn:#8a5a00;
--warnb:#fdf0cc;--bad:#b42318;--badb:#fde4e1;--info:#1d4fb8;--infob:#e0eafc;--stale:#5b3fa3;--staleb:#ece6fb;
--none:#475467;--noneb:#eceef2}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:var(--fg)}a{color:var(--info);text-decoration:none}a:hover{text-decoration:underline}
header{display:flex;align-items:center;gap:14px;padding:10px 24px;background:#101828;color:#fff}
header h1{font-size:17px;margin:0;letter-spacing:.3px}header h1 a{color:#fff}header .site{color:#d0d5dd}
header .gen{margin-left:auto;color:#98a2b3;font-size:12px}header form{margin:0}
header button{background:transparent;border:1px solid #475467;color:#d0d5dd;border-radius:6px;padding:3px 10px;
cursor:pointer}main{padding:18px 24px;max-width:1400px}h2{font-size:15px;margin:22px 0 8px}
.counts{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:14px}.count{display:flex;flex-direction:column;
min-width:92px;padding:8px 12px;border-radius:8px;background:var(--card);border:1px solid var(--line);color:var(--fg)}
.count b{font-size:22px;line-height:1.1}.count span{font-size:12px;color:var(--mut)}.count.sel{outline:2px solid var(--info)}
.count.zero{opacity:.55}.group{font-size:11px;text-transform:uppercase;color:var(--mut);width:100%;margin-top:4px}
.filter{display:flex;gap:8px;margin:6px 0 12px}.filter input,.filter select{padding:5px 8px;border:1px solid var(--line);
border-radius:6px;background:#fff;font:inherit}.filter input{width:260px}.filter button{padding:5px 12px;border-radius:6px;
border:1px solid var(--info);background:var(--info);color:#fff;font:inherit;cursor:pointer}
table{border-collapse:collapse;width:100%;background:var(--card);border:1px solid var(--line);border-radius:8px}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12px;color:var(--mut);font-weight:600;background:#fafbfc;white-space:nowrap}
#fleet th{cursor:pointer;user-select:none}#fleet th.asc::after{content:" ▲"}#fleet th.desc::after{content:" ▼"}
tbody tr:hover{background:#f9fafb}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}.mut{color:var(--mut)}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.s-ready,.s-active,.s-pass,.s-ok,.s-changed{background:var(--okb);color:var(--ok)}
.s-drifted,.s-provisioning,.s-registered,.s-validating,.s-skipped,.s-decommissioning{background:var(--warnb);color:var(--warn)}
.s-failed,.s-unhealthy,.s-fail{background:var(--badb);color:var(--bad)}.s-stale,.s-abandoned{background:var(--staleb);color:var(--stale)}
.s-converging{background:var(--infob);color:var(--info)}.s-pending,.s-planned,.s-decommissioned,.s-unchanged,.s-none{background:var(--noneb);color:var(--none)}
.count.s-ready b,.count.s-active b{color:var(--ok)}.count.s-failed b,.count.s-unhealthy b{color:var(--bad)}
.count.s-drifted b{color:var(--warn)}.count.s-stale b{color:var(--stale)}.count.s-converging b{color:var(--info)}
.count[class*=" s-"]{background:var(--card)}.bad{color:var(--bad);font-weight:600}.warn{color:var(--warn)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:10px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .k{font-size:12px;color:var(--mut)}.card .v{font-size:15px;margin-top:2px}.card .v code{overflow-wrap:anywhere}
.card.wide{grid-column:span 2}
.title{display:flex;align-items:center;gap:12px}.title h2{font-size:20px;margin:4px 0}
.chart{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px}
.legend{font-size:12px;color:var(--mut);margin:4px 0 0 4px}.legend i{display:inline-block;width:10px;height:10px;
border-radius:2px;margin:0 4px 0 12px}.legend .d{background:#6b8fd6}.legend .c{background:#3aa26b}.legend .f{background:#d9483b}
ul.ch{margin:2px 0 0;padding-left:16px}.empty{color:var(--mut);padding:10px 0}.login{max-width:380px;margin:80px auto;
background:var(--card);border:1px solid var(--line);border-radius:10px;padding:22px}.login input[type=password]{width:100%;
padding:8px;margin:8px 0 12px;border:1px solid var(--line);border-radius:6px;font:inherit}.login button{padding:7px 16px;
border-radius:6px;border:0;background:var(--info);color:#fff;font:inherit;cursor:pointer}.err{color:var(--bad)}
)";

// Sort on header click (numbers by data-v), keep the choice in the URL fragment across refreshes.
const char* const kFleetJs = R"(
(function(){var t=document.getElementById('fleet');if(!t)return;var b=t.tBodies[0],hs=t.tHead.rows[0].cells;
function key(r,i){var c=r.cells[i];var v=c.getAttribute('data-v');return v!==null?parseFloat(v):c.textContent;}
function sort(i,dir){var rows=Array.prototype.slice.call(b.rows);rows.sort(function(x,y){var a=key(x,i),c=key(y,i);
return (a<c?-1:a>c?1:0)*dir;});for(var j=0;j<hs.length;j++)hs[j].className='';hs[i].className=dir>0?'asc':'desc';
var f=document.createDocumentFragment();rows.forEach(function(r){f.appendChild(r);});b.appendChild(f);
history.replaceState(null,'','#sort='+i+(dir>0?'a':'d'));}
for(var i=0;i<hs.length;i++)(function(i){hs[i].addEventListener('click',function(){
sort(i,hs[i].className==='asc'?-1:1);});})(i);var m=/#sort=(\d+)([ad])/.exec(location.hash);
if(m&&hs[+m[1]])sort(+m[1],m[2]==='a'?1:-1);})();
)";

void head(std::string& out, const PageContext& page, const std::string& title, int refresh_s) {
    out +=
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">";
    if (refresh_s > 0) out += "<meta http-equiv=\"refresh\" content=\"" + std::to_string(refresh_s) + "\">";
    out += "<title>";
    append_escaped(out, title);
    out += "</title><style nonce=\"";
    append_escaped(out, page.nonce);
    out += "\">";
    out += kCss;
    out += "</style></head><body><header><h1><a href=\"/\">nodeform</a></h1><span class=\"site\">";
    append_escaped(out, page.site_name);
    out += "</span><span class=\"gen\">generated ";
    append_escaped(out, page.generated_at);
    out += "</span>";
    if (!page.csrf.empty()) {
        out += "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"";
        append_escaped(out, page.csrf);
        out += "\"><button type=\"submit\">Log out</button></form>";
    }
    out += "</header><main>";
}

void badge(std::string& out, std::string_view state) {
    out += "<span class=\"badge s-";
    append_escaped(out, state.empty() ? "none" : state);
    out += "\">";
    append_escaped(out, state.empty() ? "none" : state);
    out += "</span>";
}

const char* const kLifecycleStates[] = {"planned",         "provisioning",   "registered", "validating", "active",
                                        "decommissioning", "decommissioned", "failed",     "abandoned"};

bool matches(const FleetRow& row, const FleetFilter& filter) {
    if (!filter.query.empty() && row.identity.find(filter.query) == std::string::npos) return false;
    if (filter.status.empty()) return true;
    if (filter.status.rfind("lifecycle:", 0) == 0) return row.lifecycle == filter.status.substr(10);
    return filter.status == to_string(row.status);
}

void count_link(std::string& out, const std::string& key, const std::string& label, std::size_t n,
                const FleetFilter& filter, const std::string& css) {
    out += "<a class=\"count s-";
    append_escaped(out, css);
    if (n == 0) out += " zero";
    if (filter.status == key) out += " sel";
    out += "\" href=\"/?status=";
    append_escaped(out, key);
    out += "\" data-status=\"";
    append_escaped(out, key);
    out += "\"><b>" + std::to_string(n) + "</b><span>";
    append_escaped(out, label);
    out += "</span></a>";
}

}  // namespace

FleetRow fleet_row(const NodeRecord& rec, const site::Node* node, const lifecycle::NodeRecord* provisioned,
                   TimePoint now, const StatusOptions& options) {
    FleetRow row;
    row.identity = rec.identity;
    row.status = derive_status(rec, node, now, options);
    if (node != nullptr) row.current_digest = node->digest;
    if (provisioned != nullptr) row.lifecycle = lifecycle::to_string(provisioned->state);
    if (rec.last_report) {
        const ReportRecord& last = *rec.last_report;
        const ReportRecord& run = rec.last_run_report ? *rec.last_run_report : last;
        row.age_s = std::chrono::duration_cast<std::chrono::seconds>(now - last.received_at).count();
        row.spec_digest = run.spec_digest;
        row.changed = run.changed;
        row.failed = run.failed;
        row.drifted = run.drifted;
        row.health_failed = last.health_failed;
    }
    return row;
}

std::vector<FleetRow> fleet_rows(const std::vector<NodeRecord>& records, const site::Site* site,
                                 const std::vector<lifecycle::NodeRecord>& provisioned, TimePoint now,
                                 const StatusOptions& options) {
    // A merge walk over the three identity-ordered sources (the stores' lists are sorted here if they are not).
    auto by_identity = [](const auto* a, const auto* b) { return a->identity < b->identity; };
    std::vector<const NodeRecord*> rs;
    rs.reserve(records.size());
    for (const auto& r : records)
        rs.push_back(&r);
    if (!std::is_sorted(rs.begin(), rs.end(), by_identity)) std::sort(rs.begin(), rs.end(), by_identity);
    std::vector<const lifecycle::NodeRecord*> ls;
    ls.reserve(provisioned.size());
    for (const auto& r : provisioned)
        ls.push_back(&r);
    if (!std::is_sorted(ls.begin(), ls.end(), by_identity)) std::sort(ls.begin(), ls.end(), by_identity);
    static const std::map<std::string, site::Node> kNoNodes;
    const auto& nodes = site ? site->nodes : kNoNodes;

    std::vector<FleetRow> rows;
    rows.reserve(std::max({rs.size(), ls.size(), nodes.size()}));
    auto r = rs.begin();
    auto l = ls.begin();
    auto n = nodes.begin();
    NodeRecord named{};
    while (r != rs.end() || l != ls.end() || n != nodes.end()) {
        const std::string* next = nullptr;
        auto consider = [&next](const std::string& id) {
            if (next == nullptr || id < *next) next = &id;
        };
        if (r != rs.end()) consider((*r)->identity);
        if (l != ls.end()) consider((*l)->identity);
        if (n != nodes.end()) consider(n->first);
        const std::string id = *next;
        const NodeRecord* record = nullptr;
        const lifecycle::NodeRecord* lc = nullptr;
        const site::Node* node = nullptr;
        for (; r != rs.end() && (*r)->identity == id; ++r)
            record = *r;
        for (; l != ls.end() && (*l)->identity == id; ++l)
            lc = *l;
        if (n != nodes.end() && n->first == id) node = &(n++)->second;
        if (record == nullptr) {
            named.identity = id;
            record = &named;
        }
        rows.push_back(fleet_row(*record, node, lc, now, options));
    }
    std::stable_sort(rows.begin(), rows.end(),
                     [](const FleetRow& a, const FleetRow& b) { return urgency(a) < urgency(b); });
    return rows;
}

std::string render_fleet_page(const PageContext& page, const std::vector<FleetRow>& rows, const FleetFilter& filter,
                              int refresh_s) {
    std::string out;
    out.reserve(2048 + rows.size() * 420);
    head(out, page, "nodeform · " + page.site_name + " · fleet", refresh_s);

    std::map<std::string, std::size_t> by_status, by_state;
    for (const auto& r : rows) {
        by_status[to_string(r.status)]++;
        if (!r.lifecycle.empty()) by_state[r.lifecycle]++;
    }
    out += "<section class=\"counts\" id=\"counts\">";
    count_link(out, "", "nodes", rows.size(), filter, "all");
    for (auto s : {NodeStatus::ready, NodeStatus::drifted, NodeStatus::failed, NodeStatus::unhealthy, NodeStatus::stale,
                   NodeStatus::converging, NodeStatus::pending})
        count_link(out, to_string(s), to_string(s), by_status[to_string(s)], filter, to_string(s));
    out += "<div class=\"group\">lifecycle</div>";
    for (const char* s : kLifecycleStates)
        count_link(out, std::string("lifecycle:") + s, s, by_state[s], filter, s);
    out += "</section>";

    out +=
        "<form class=\"filter\" method=\"get\" action=\"/\"><input type=\"search\" name=\"q\" "
        "placeholder=\"identity contains…\" value=\"";
    append_escaped(out, filter.query);
    out += "\"><select name=\"status\"><option value=\"\">any status</option>";
    auto option = [&](const std::string& value, const std::string& label) {
        out += "<option value=\"";
        append_escaped(out, value);
        out += filter.status == value ? "\" selected>" : "\">";
        append_escaped(out, label);
        out += "</option>";
    };
    for (auto s : kAllStatuses)
        option(to_string(s), to_string(s));
    for (const char* s : kLifecycleStates)
        option(std::string("lifecycle:") + s, std::string("lifecycle ") + s);
    out += "</select><button type=\"submit\">Filter</button></form>";

    out +=
        "<table id=\"fleet\"><thead><tr><th>identity</th><th>status</th><th>lifecycle</th><th>last report</th>"
        "<th>spec digest</th><th>changed / failed</th><th>health</th></tr></thead><tbody>";
    std::size_t shown = 0;
    for (const auto& r : rows) {
        if (!matches(r, filter)) continue;
        ++shown;
        const char* status = to_string(r.status);
        out += "<tr data-status=\"";
        out += status;
        out += "\" data-identity=\"";
        append_escaped(out, r.identity);
        out += "\"><td>";
        if (valid_identity(r.identity)) {
            out += "<a href=\"/nodes/";
            out += r.identity;  // valid_identity: [A-Za-z0-9._-] only
            out += "\">";
            out += r.identity;
            out += "</a>";
        } else {
            append_escaped(out, r.identity);
        }
        out += "</td><td data-v=\"" + std::to_string(urgency(r)) + "\">";
        badge(out, status);
        out += "</td><td>";
        if (!r.lifecycle.empty())
            badge(out, r.lifecycle);
        else
            out += "<span class=\"mut\">—</span>";
        if (r.age_s) {
            out += "</td><td class=\"num\" data-v=\"" + std::to_string(*r.age_s) + "\">" + age_text(*r.age_s) + " ago";
        } else {
            out += "</td><td class=\"num\" data-v=\"1e18\"><span class=\"mut\">never</span>";
        }
        out += "</td><td>";
        if (!r.spec_digest.empty()) {
            bool outdated = !r.current_digest.empty() && r.current_digest != r.spec_digest;
            out += "<code title=\"";
            append_escaped(out, outdated ? r.spec_digest + " (site: " + r.current_digest + ")" : r.spec_digest);
            out += outdated ? "\" class=\"warn\">" : "\">";
            append_escaped(out, short_digest(r.spec_digest));
            out += "</code>";
            if (outdated) out += " <span class=\"warn\">≠ site</span>";
        } else {
            out += "<span class=\"mut\">—</span>";
        }
        out += "</td><td class=\"num\" data-v=\"" + std::to_string(r.failed * 1000000 + r.changed) + "\">" +
               std::to_string(r.changed) + " / ";
        if (r.failed > 0)
            out += "<span class=\"bad\">" + std::to_string(r.failed) + "</span>";
        else
            out += "0";
        out += "</td><td data-v=\"" + std::to_string(r.health_failed) + "\">";
        if (!r.age_s)
            out += "<span class=\"mut\">—</span>";
        else if (r.health_failed > 0)
            out += "<span class=\"bad\">" + std::to_string(r.health_failed) + " failing</span>";
        else
            out += "ok";
        out += "</td></tr>";
    }
    out += "</tbody></table>";
    if (shown == 0) out += "<p class=\"empty\">No node matches.</p>";
    out += "<p class=\"mut\">" + std::to_string(shown) + " of " + std::to_string(rows.size()) +
           " nodes shown; refreshes every " + std::to_string(refresh_s) + " s.</p></main><script nonce=\"";
    append_escaped(out, page.nonce);
    out += "\">";
    out += kFleetJs;
    out += "</script></body></html>";
    return out;
}

// ---- node page ------------------------------------------------------------------------------------------

namespace {

// Text from a report or receipt: redacted, then escaped.
struct Writer {
    std::string& out;
    const std::vector<std::string>& secrets;
    void text(std::string_view s) { append_escaped(out, redact_secrets(std::string(s), secrets)); }
    void value(const json& v) {
        if (v.is_string())
            text(v.get_ref<const std::string&>());
        else if (v.is_null())
            out += "<span class=\"mut\">—</span>";
        else
            text(v.dump());
    }
    void field(const json& obj, const char* key) {
        if (obj.is_object() && obj.contains(key))
            value(obj[key]);
        else
            out += "<span class=\"mut\">—</span>";
    }
    void raw(std::string_view s) { out += s; }
};

double seconds_between(const std::string& a, const std::string& b) {
    std::chrono::system_clock::time_point ta, tb;
    if (!parse_rfc3339(a, ta) || !parse_rfc3339(b, tb)) return 0;
    return std::max(0.0, std::chrono::duration<double>(tb - ta).count());
}

std::string fixed(double v, int decimals) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
    return buf;
}

void card(Writer& w, const char* key, const std::function<void()>& value, bool wide = false) {
    w.raw(wide ? "<div class=\"card wide\"><div class=\"k\">" : "<div class=\"card\"><div class=\"k\">");
    w.raw(key);
    w.raw("</div><div class=\"v\">");
    value();
    w.raw("</div></div>");
}

void changes_list(Writer& w, const json& item) {
    auto it = item.find("changes");
    if (it == item.end() || !it->is_array() || it->empty()) return;
    w.raw("<ul class=\"ch\">");
    for (const auto& c : *it) {
        w.raw("<li><code>");
        w.field(c, "field");
        w.raw("</code>: ");
        w.field(c, "old");
        w.raw(" → ");
        w.field(c, "new");
        w.raw("</li>");
    }
    w.raw("</ul>");
}

// Oldest left: one duration bar per report on top, changed (green) and failed (red) counts below.
void timeline_svg(Writer& w, const std::vector<ReportRecord>& newest_first) {
    struct Point {
        double duration = 0;
        std::int64_t changed = 0, failed = 0;
        std::string label;
    };
    std::vector<Point> pts;
    for (auto it = newest_first.rbegin(); it != newest_first.rend(); ++it) {
        Point p;
        json body = json::parse(it->body, nullptr, false);
        if (body.is_object()) p.duration = seconds_between(body.value("started_at", ""), body.value("finished_at", ""));
        p.changed = it->changed;
        p.failed = it->failed;
        p.label = it->finished_at + " · " + it->trigger + "/" + it->mode + " · " + fixed(p.duration, 2) + " s · " +
                  std::to_string(p.changed) + " changed · " + std::to_string(p.failed) + " failed";
        pts.push_back(std::move(p));
    }
    const int width = 900, top_h = 90, bottom_h = 50, gap = 18, left = 48;
    double max_d = 0.001;
    std::int64_t max_c = 1;
    for (const auto& p : pts) {
        max_d = std::max(max_d, p.duration);
        max_c = std::max({max_c, p.changed, p.failed});
    }
    const double slot = pts.empty() ? 0 : double(width - left - 4) / double(pts.size());
    const int total_h = top_h + gap + bottom_h + 16;
    w.raw("<div class=\"chart\"><svg id=\"timeline\" width=\"100%\" viewBox=\"0 0 " + std::to_string(width) + " " +
          std::to_string(total_h) + "\" role=\"img\" aria-label=\"last reports\">");
    auto line = [&](int y) {
        w.raw("<line x1=\"" + std::to_string(left) + "\" x2=\"" + std::to_string(width) + "\" y1=\"" +
              std::to_string(y) + "\" y2=\"" + std::to_string(y) + "\" stroke=\"#e3e6eb\"/>");
    };
    auto label = [&](int y, const std::string& text) {
        w.raw("<text x=\"" + std::to_string(left - 6) + "\" y=\"" + std::to_string(y) +
              "\" font-size=\"11\" fill=\"#667085\" text-anchor=\"end\">");
        w.text(text);
        w.raw("</text>");
    };
    line(top_h);
    line(4);
    label(12, fixed(max_d, max_d < 10 ? 2 : 0) + " s");
    label(top_h, "0 s");
    const int base2 = top_h + gap + bottom_h;
    line(base2);
    label(top_h + gap + 10, std::to_string(max_c));
    label(base2, "0");
    for (std::size_t i = 0; i < pts.size(); ++i) {
        const auto& p = pts[i];
        double x = left + 2 + slot * double(i);
        double bw = std::clamp(slot * 0.7, 1.0, 28.0);
        double h = (top_h - 6) * p.duration / max_d;
        w.raw("<g><title>");
        w.text(p.label);
        w.raw("</title><rect x=\"" + fixed(x, 1) + "\" y=\"" + fixed(top_h - h, 1) + "\" width=\"" + fixed(bw, 1) +
              "\" height=\"" + fixed(std::max(h, 0.5), 1) + "\" fill=\"#6b8fd6\" rx=\"1\"/>");
        double half = bw / 2;
        double hc = (bottom_h - 4) * double(p.changed) / double(max_c);
        double hf = (bottom_h - 4) * double(p.failed) / double(max_c);
        if (p.changed > 0)
            w.raw("<rect x=\"" + fixed(x, 1) + "\" y=\"" + fixed(base2 - hc, 1) + "\" width=\"" + fixed(half, 1) +
                  "\" height=\"" + fixed(hc, 1) + "\" fill=\"#3aa26b\"/>");
        if (p.failed > 0)
            w.raw("<rect x=\"" + fixed(x + half, 1) + "\" y=\"" + fixed(base2 - hf, 1) + "\" width=\"" +
                  fixed(half, 1) + "\" height=\"" + fixed(hf, 1) + "\" fill=\"#d9483b\"/>");
        w.raw("</g>");
    }
    if (pts.empty())
        w.raw("<text x=\"" + std::to_string(width / 2) + "\" y=\"" + std::to_string(top_h / 2) +
              "\" font-size=\"13\" fill=\"#667085\" text-anchor=\"middle\">no reports yet</text>");
    w.raw(
        "</svg><div class=\"legend\"><i class=\"d\"></i>run duration<i class=\"c\"></i>changed<i "
        "class=\"f\"></i>failed · oldest left, " +
        std::to_string(pts.size()) + " newest reports</div></div>");
}

}  // namespace

std::vector<std::string> node_secrets(const site::Node& node) {
    std::vector<std::string> out;
    if (!node.auth.site_token.empty()) out.push_back(node.auth.site_token);
    auto paths = node.resolved.find("secret_paths");
    if (paths != node.resolved.end() && paths->is_array()) {
        for (const auto& p : *paths) {
            if (!p.is_string()) continue;
            try {
                const json& v = node.resolved.at(json::json_pointer(p.get<std::string>()));
                if (v.is_string() && !v.get_ref<const std::string&>().empty()) out.push_back(v.get<std::string>());
            } catch (const json::exception&) {
            }
        }
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
    return out;
}

std::string render_node_page(const PageContext& page, const NodePageData& node) {
    std::string out;
    out.reserve(32 * 1024);
    Writer w{out, node.secrets};
    const FleetRow& s = node.summary;
    head(out, page, "nodeform · " + s.identity, 0);
    w.raw("<p><a href=\"/\">← fleet</a></p><div class=\"title\"><h2 id=\"identity\">");
    w.text(s.identity);
    w.raw("</h2>");
    badge(out, to_string(s.status));
    if (!s.lifecycle.empty()) badge(out, s.lifecycle);
    w.raw("</div>");

    // Summary cards: the spec the node has against the one it should have.
    bool outdated = !s.spec_digest.empty() && !s.current_digest.empty() && s.spec_digest != s.current_digest;
    w.raw("<div class=\"cards\">");
    card(w, "last report", [&] {
        if (s.age_s)
            w.raw(age_text(*s.age_s) + " ago");
        else
            w.raw("<span class=\"mut\">never</span>");
    });
    card(
        w, "spec applied",
        [&] {
            w.raw(outdated ? "<code class=\"warn\" id=\"spec-has\">" : "<code id=\"spec-has\">");
            w.text(s.spec_digest.empty() ? "—" : s.spec_digest);
            w.raw("</code>");
        },
        true);
    card(
        w, "spec the site wants",
        [&] {
            w.raw("<code id=\"spec-wants\">");
            w.text(s.current_digest.empty() ? "— (not in the site)" : s.current_digest);
            w.raw("</code>");
            if (outdated)
                w.raw(" <span class=\"warn\">not applied yet</span>");
            else if (!s.spec_digest.empty() && !s.current_digest.empty())
                w.raw(" <span class=\"badge s-ok\">match</span>");
        },
        true);
    card(w, "last run", [&] {
        w.raw(std::to_string(s.changed) + " changed · ");
        w.raw(s.failed > 0 ? "<span class=\"bad\">" + std::to_string(s.failed) + " failed</span>" : "0 failed");
        w.raw(" · " + std::to_string(s.drifted) + " drifted");
    });
    card(w, "reports stored", [&] { w.raw(std::to_string(node.report_count)); });
    card(w, "enrolled", [&] { w.raw(node.enrolled ? "yes" : "no"); });
    if (node.last_run_report.is_object()) {
        card(w, "agent", [&] { w.field(node.last_run_report, "agent_version"); });
        card(w, "phase / mode", [&] {
            w.field(node.last_run_report, "phase");
            w.raw(" / ");
            w.field(node.last_run_report, "mode");
        });
    }
    w.raw("</div>");

    // Health: from the newest report.
    w.raw("<h2>Health checks</h2>");
    const json* health =
        node.last_report.is_object() && node.last_report.contains("health") && node.last_report["health"].is_array()
            ? &node.last_report["health"]
            : nullptr;
    if (health == nullptr || health->empty()) {
        w.raw("<p class=\"empty\">No health results reported.</p>");
    } else {
        w.raw(
            "<table id=\"health\"><thead><tr><th>check</th><th>type</th><th>status</th><th>message</th><th>checked"
            "</th></tr></thead><tbody>");
        for (const auto& h : *health) {
            w.raw("<tr><td>");
            w.field(h, "name");
            w.raw("</td><td>");
            w.field(h, "type");
            w.raw("</td><td>");
            badge(out, h.value("status", "") == "pass" ? "pass" : "fail");
            w.raw("</td><td>");
            w.field(h, "message");
            w.raw("</td><td>");
            w.field(h, "checked_at");
            w.raw("</td></tr>");
        }
        w.raw("</tbody></table>");
    }

    // Resources and drift: from the newest run report.
    w.raw("<h2>Last run, per resource</h2>");
    const json& run = node.last_run_report;
    if (!run.is_object() || !run.contains("resources") || !run["resources"].is_array() || run["resources"].empty()) {
        w.raw("<p class=\"empty\">No resources reported.</p>");
    } else {
        w.raw(
            "<table id=\"resources\"><thead><tr><th>resource</th><th>status</th><th>took</th><th>what and why"
            "</th></tr></thead><tbody>");
        for (const auto& r : run["resources"]) {
            std::string status = r.value("status", "");
            w.raw("<tr data-status=\"");
            w.text(status);
            w.raw("\"><td><code>");
            w.field(r, "id");
            w.raw("</code></td><td>");
            badge(out, status == "unchanged" || status == "changed" || status == "failed" || status == "skipped" ||
                               status == "drifted"
                           ? status
                           : "none");
            w.raw("</td><td class=\"num\">");
            if (r.contains("duration_ms") && r["duration_ms"].is_number())
                w.raw(fixed(r["duration_ms"].get<double>() / 1000.0, 2) + " s");
            w.raw("</td><td>");
            if (r.contains("message")) w.field(r, "message");
            changes_list(w, r);
            w.raw("</td></tr>");
        }
        w.raw("</tbody></table>");
    }
    if (run.is_object() && run.contains("drift") && run["drift"].is_array() && !run["drift"].empty()) {
        w.raw("<h2>Drift</h2><table id=\"drift\"><thead><tr><th>resource</th><th>differs</th></tr></thead><tbody>");
        for (const auto& d : run["drift"]) {
            w.raw("<tr><td><code>");
            w.field(d, "id");
            w.raw("</code></td><td>");
            changes_list(w, d);
            w.raw("</td></tr>");
        }
        w.raw("</tbody></table>");
    }

    // Timeline of the newest reports.
    w.raw("<h2>Last reports</h2>");
    timeline_svg(w, node.recent);
    if (!node.recent.empty()) {
        w.raw(
            "<table id=\"reports\"><thead><tr><th>finished</th><th>trigger</th><th>mode</th><th>phase</th>"
            "<th>changed</th><th>failed</th><th>drifted</th><th>health failing</th><th>spec</th></tr></thead><tbody>");
        std::size_t shown = 0;
        for (const auto& r : node.recent) {
            if (++shown > 15) break;
            w.raw("<tr><td>");
            w.text(r.finished_at);
            w.raw("</td><td>");
            w.text(r.trigger);
            w.raw("</td><td>");
            w.text(r.mode);
            w.raw("</td><td>");
            w.text(r.phase);
            w.raw("</td><td class=\"num\">" + std::to_string(r.changed) + "</td><td class=\"num\">" +
                  (r.failed > 0 ? "<span class=\"bad\">" + std::to_string(r.failed) + "</span>" : "0") +
                  "</td><td class=\"num\">" + std::to_string(r.drifted) + "</td><td class=\"num\">" +
                  std::to_string(r.health_failed) + "</td><td><code>");
            w.text(short_digest(r.spec_digest));
            w.raw("</code></td></tr>");
        }
        w.raw("</tbody></table>");
    }

    // Lifecycle and receipts.
    w.raw("<h2>Lifecycle</h2>");
    if (!node.lifecycle) {
        w.raw("<p class=\"empty\">Never provisioned by <code>node create</code>.</p>");
    } else {
        const auto& lc = *node.lifecycle;
        w.raw("<div class=\"cards\">");
        card(w, "state", [&] { badge(out, lifecycle::to_string(lc.state)); });
        card(w, "last step", [&] { w.text(lc.step.empty() ? "—" : lc.step); });
        card(w, "VM", [&] {
            w.raw(lc.vmid > 0 ? std::to_string(lc.vmid) : "—");
            if (!lc.pve_node.empty()) {
                w.raw(" on ");
                w.text(lc.pve_node);
            }
        });
        card(w, "addresses", [&] {
            std::string ips;
            for (const auto& ip : lc.ips)
                ips += (ips.empty() ? "" : ", ") + ip;
            w.text(ips.empty() ? "—" : ips);
        });
        card(w, "updated", [&] { w.text(lc.updated_at); });
        if (!lc.failed_step.empty() || !lc.reason.empty())
            card(w, "failed", [&] {
                w.raw("<span class=\"bad\">");
                w.text(lc.failed_step);
                w.raw("</span>: ");
                w.text(lc.reason);
            });
        w.raw("</div>");
        if (node.receipts.empty()) {
            w.raw("<p class=\"empty\">No receipts.</p>");
        } else {
            w.raw(
                "<h2>Receipts</h2><table id=\"receipts\"><thead><tr><th>step</th><th>started</th><th>took</th>"
                "<th>outcome</th><th>state after</th><th>error</th></tr></thead><tbody>");
            for (const auto& r : node.receipts) {
                w.raw("<tr><td>");
                w.text(r.step);
                w.raw("</td><td>");
                w.text(r.started_at);
                w.raw("</td><td class=\"num\">" + fixed(seconds_between(r.started_at, r.finished_at), 2) +
                      " s</td><td>");
                badge(out, r.outcome == "ok" ? "ok" : r.outcome == "failed" ? "failed" : "skipped");
                w.raw("</td><td>");
                w.text(r.state_after);
                w.raw("</td><td>");
                w.text(r.error);
                w.raw("</td></tr>");
            }
            w.raw("</tbody></table>");
        }
    }
    w.raw("</main></body></html>");
    return out;
}

}  // namespace nodeform::controller
