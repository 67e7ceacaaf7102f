//! The demo's state: a handful of realistic flags showing targeting, rollouts, every value
//! type and a partial-bitset segment. The constants let the demo and its tests refer to it
//! without repeating strings.

use crate::bitset::Bitset;
use crate::flag::{FlagBuilder, RuleBuilder};
use crate::schema::{s_bool, s_double, s_int, s_list, s_string, s_struct};
use crate::segment::SegmentBuilder;
use crate::state::{BuiltState, ClientBuilder, CredentialBuilder, StateBuilder};
use crate::targeting::{at_least, eq, expr, one_of, t_str, t_version};
use crate::value::{obj, v_bool, v_list, v_num, v_obj, v_str};

/// Account id of the demo state.
pub const DEMO_ACCOUNT: &str = "demo-account";
/// The demo client (`clients/<id>`).
pub const DEMO_CLIENT: &str = "clients/demo-app";
/// Its only credential.
pub const DEMO_CREDENTIAL: &str = "clients/demo-app/clientCredentials/demo-key";
/// The secret the demo resolves with.
pub const DEMO_SECRET: &str = "demo-client-secret";

/// Bool flag `{enabled}`: `on` for Sweden or paying plans, else a 50/50 rollout.
pub const FLAG_NEW_UI: &str = "new-ui";
/// String flag `{text}`: Swedish greeting for Sweden, English otherwise.
pub const FLAG_WELCOME: &str = "welcome-message";
/// Number flag `{limit}`: 50 for enterprise, 10 otherwise.
pub const FLAG_MAX_ITEMS: &str = "max-items";
/// Object flag with nested values (`checkout.theme.color` exists): `modern` for
/// `app.version >= 2.0.0`, `classic` otherwise.
pub const FLAG_CHECKOUT: &str = "checkout";
/// Bool flag `{enabled}` served to a 20% bitset allocation only; everyone else gets no match.
pub const FLAG_GRADUAL: &str = "gradual-rollout";
/// An archived flag: never resolved.
pub const FLAG_RETIRED: &str = "retired-experiment";

/// Bits set in the gradual-rollout segment's bitset (the first 20% of positions).
pub const GRADUAL_BITS: u32 = 200_000;

/// The demo state (see the `FLAG_*` constants for what each flag does).
pub fn demo_state() -> BuiltState {
    let on_off = |flag: &str| {
        FlagBuilder::new(flag)
            .field("enabled", s_bool())
            .variant("on", obj([("enabled", v_bool(true))]))
            .variant("off", obj([("enabled", v_bool(false))]))
            .client(DEMO_CLIENT)
    };

    let segments = [
        SegmentBuilder::new("everyone"),
        SegmentBuilder::new("beta-users")
            .attribute("country", "country", eq(t_str("SE")))
            .attribute("plan", "plan", one_of([t_str("pro"), t_str("enterprise")]))
            .expression(expr::or([expr::id("country"), expr::id("plan")])),
        SegmentBuilder::new("new-ui-rollout").proportion("0.5"),
        SegmentBuilder::new("sweden").attribute("country", "country", eq(t_str("SE"))).expression(expr::id("country")),
        SegmentBuilder::new("enterprise")
            .attribute("plan", "plan", eq(t_str("enterprise")))
            .expression(expr::id("plan")),
        SegmentBuilder::new("modern-app")
            .attribute("version", "app.version", at_least(t_version("2.0.0")))
            .expression(expr::id("version")),
        SegmentBuilder::new("gradual-20").proportion("0.2").bitset(Bitset::first(GRADUAL_BITS)),
    ];

    let new_ui = on_off(FLAG_NEW_UI)
        .description("New UI: targeted to Sweden and paying plans, 50% for everyone else")
        .rule(RuleBuilder::full("targeted", "beta-users", "on"))
        .rule(RuleBuilder::split("rollout", "new-ui-rollout", [("on", 50), ("off", 50)]));

    let welcome = FlagBuilder::new(FLAG_WELCOME)
        .field("text", s_string())
        .variant("english", obj([("text", v_str("Welcome!"))]))
        .variant("swedish", obj([("text", v_str("Välkommen!"))]))
        .client(DEMO_CLIENT)
        .rule(RuleBuilder::full("sweden", "sweden", "swedish"))
        .rule(RuleBuilder::full("default", "everyone", "english"));

    let max_items = FlagBuilder::new(FLAG_MAX_ITEMS)
        .field("limit", s_int())
        .variant("standard", obj([("limit", v_num(10))]))
        .variant("extended", obj([("limit", v_num(50))]))
        .client(DEMO_CLIENT)
        .rule(RuleBuilder::full("enterprise", "enterprise", "extended"))
        .rule(RuleBuilder::full("default", "everyone", "standard"));

    let checkout = FlagBuilder::new(FLAG_CHECKOUT)
        .field("theme", s_struct([("color", s_string()), ("dark_mode", s_bool())]))
        .field("layout", s_struct([("columns", s_int())]))
        .field("steps", s_list(s_string()))
        .field("discount", s_double())
        .variant(
            "classic",
            obj([
                ("theme", v_obj([("color", v_str("blue")), ("dark_mode", v_bool(false))])),
                ("layout", v_obj([("columns", v_num(1))])),
                ("steps", v_list([v_str("cart"), v_str("payment")])),
                ("discount", v_num(0.0)),
            ]),
        )
        .variant(
            "modern",
            obj([
                ("theme", v_obj([("color", v_str("green")), ("dark_mode", v_bool(true))])),
                ("layout", v_obj([("columns", v_num(2))])),
                ("steps", v_list([v_str("cart"), v_str("shipping"), v_str("payment")])),
                ("discount", v_num(0.15)),
            ]),
        )
        .client(DEMO_CLIENT)
        .rule(RuleBuilder::full("modern-app", "modern-app", "modern"))
        .rule(RuleBuilder::full("default", "everyone", "classic"));

    let gradual = on_off(FLAG_GRADUAL).rule(RuleBuilder::full("gradual", "gradual-20", "on"));

    let retired = on_off(FLAG_RETIRED).archived().rule(RuleBuilder::full("default", "everyone", "on"));

    let mut b = StateBuilder::new(DEMO_ACCOUNT).client(
        ClientBuilder::new(DEMO_CLIENT)
            .display_name("Demo app")
            .credential(CredentialBuilder::new("demo-key", DEMO_SECRET)),
    );
    for s in segments {
        b = b.segment(s);
    }
    b.flag(new_ui).flag(welcome).flag(max_items).flag(checkout).flag(gradual).flag(retired).build()
}
