// The remainder() valijson's multipleOf check uses (shared/src/site/valijson_remainder.hpp): the check still
// accepts multiples and refuses the rest, through valijson itself.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "../../../shared/src/site/valijson_remainder.hpp"  // before valijson, as schema.cpp includes it

#include <nlohmann/json.hpp>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

namespace {

bool valid(double divisor, const nlohmann::json& value) {
    nlohmann::json document = {{"multipleOf", divisor}};
    valijson::Schema schema;
    valijson::SchemaParser parser;
    valijson::adapters::NlohmannJsonAdapter schema_adapter(document);
    parser.populateSchema(schema_adapter, schema);
    valijson::Validator validator;
    valijson::adapters::NlohmannJsonAdapter target(value);
    return validator.validate(schema, target, nullptr);
}

TEST(ValijsonRemainder, MultipleOfAcceptsMultiplesAndRefusesTheRest) {
    EXPECT_TRUE(valid(2.5, 10.0));
    EXPECT_TRUE(valid(2.5, -7.5));
    EXPECT_TRUE(valid(0.5, 1e300));  // far beyond 2^52 times the divisor: integral
    EXPECT_TRUE(valid(3, 9));
    EXPECT_FALSE(valid(2.5, 10.1));
    EXPECT_FALSE(valid(3, 10));
    EXPECT_FALSE(valid(0.25, -0.3));
}

TEST(ValijsonRemainder, MatchesIeeeRemainderIncludingTiesToEven) {
    for (double x : {10.0, 10.1, -7.5, 7.5, 2.5, -2.5, 0.3, 1e10 + 0.5, 123456.789})
        for (double y : {2.5, 3.0, 0.25, 1.0, 5.0})
            EXPECT_NEAR(valijson::remainder(x, y), std::remainder(x, y), 1e-9) << x << " " << y;
    EXPECT_TRUE(std::isnan(valijson::remainder(std::numeric_limits<double>::quiet_NaN(), 1.0)));
}

}  // namespace
