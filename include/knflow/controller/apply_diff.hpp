#pragma once

// Whether a server-side apply would change anything: the controller applies a desired object only
// when it differs from the informer's copy, so that a resync of an unchanged Workflow makes no
// write at all. Pure; thread-safe.

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <string_view>

namespace knflow::controller {

// JSON equality where numbers compare by value (3 == 3u == 3.0).
bool json_equal(const boost::json::value& a, const boost::json::value& b);

// Every field set in `desired` has the same value in `observed`: objects may hold more keys
// there (defaults, other managers' fields, status); arrays must have the same length and match
// element by element; a null in `desired` (a removal) matches a missing field.
bool json_subset(const boost::json::value& desired, const boost::json::value& observed);

// Every field listed in a managedFields entry's fieldsV1 (`f:name`, `k:{keys}`, `v:value`,
// `i:index`) is still set in `desired`. False when it lists one that is not: applying `desired`
// would remove that field. Unknown entries count as not covered.
bool fields_covered(const boost::json::object& fields_v1, const boost::json::value& desired);

// Whether applying `desired` as `manager` (operation Apply) would change `observed`: a field we
// set differs there, or `manager` owns a field `desired` no longer sets.
bool needs_apply(const boost::json::object& desired, const boost::json::object& observed,
                 std::string_view manager = "knflow");

}  // namespace knflow::controller
