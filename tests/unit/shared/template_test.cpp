// Node-fact templates: substitution, the escape, and every malformed or unknown name as an error.
#include <gtest/gtest.h>

#include "nodeform/template.hpp"

namespace nodeform {
namespace {

const std::map<std::string, std::string> kFacts = {
    {"hostname", "web-01"}, {"fqdn", "web-01.lab"}, {"primary_ip", "10.0.0.5"}, {"site", "lab"}, {"node", "web-01"}};

TEST(Template, SubstitutesFactsWithOrWithoutSpaces) {
    EXPECT_EQ(render_template("{{hostname}} {{ fqdn }} {{  primary_ip }}/{{site}}/{{node}}", kFacts).value(),
              "web-01 web-01.lab 10.0.0.5/lab/web-01");
    EXPECT_EQ(render_template("no facts { here } }}", kFacts).value(), "no facts { here } }}");
}

TEST(Template, BackslashEscapesOnlyADoubleBrace) {
    EXPECT_EQ(render_template("\\{{ node }}", kFacts).value(), "{{ node }}");
    EXPECT_EQ(render_template("\\\\{{ node }}", kFacts).value(), "\\web-01");
    EXPECT_EQ(render_template("C:\\dir \\n", kFacts).value(), "C:\\dir \\n");
}

TEST(Template, UnknownMalformedAndUnclosedAreErrorsNamingTheLine) {
    auto unknown = template_facts_used("a\nb {{ password }}\n");
    ASSERT_FALSE(unknown);
    EXPECT_EQ(unknown.message(), "line 2: unknown fact 'password' (known: hostname, fqdn, primary_ip, site, node)");
    EXPECT_FALSE(template_facts_used("{{ node | upper }}"));
    EXPECT_FALSE(template_facts_used("{{}}"));
    auto unclosed = template_facts_used("{{ node\n}}");
    ASSERT_FALSE(unclosed);
    EXPECT_NE(unclosed.message().find("line 1: '{{' is not closed"), std::string::npos);
}

TEST(Template, FactsUsedInOrderAndAMissingFactFailsRendering) {
    EXPECT_EQ(template_facts_used("{{site}} {{node}} {{site}}").value(), (std::vector<std::string>{"site", "node"}));
    auto missing = render_template("ip {{ primary_ip }}", {{"node", "x"}});
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.message(), "line 1: primary_ip is not known on this node");
}

}  // namespace
}  // namespace nodeform
