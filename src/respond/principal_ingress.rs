//! "Revoke every rule opened by the principal": the security-group ingress rules a user or role
//! authorised (its `AuthorizeSecurityGroupIngress` events, whatever the request's shape: the
//! rule ids come from the answer) or widened (its `ModifySecurityGroupRules` events: a rule whose
//! source, protocol or ports the principal changed is one it opened, by the rule id the request
//! names) that still exist, read live with the responder role.
//!
//! The events are read newest first (the attacker's latest rules first), page by page; only
//! rules that still exist count against [`MAX_RULES`]. An event is trusted only when it is EC2's,
//! of this account, in a region; a rule only when its live group, protocol, ports and source are
//! the event's (for a modification: what it set). Anything cut off, unresolved, mismatched,
//! unreadable or refused is listed in `incomplete`: the action then records `failed`, never
//! `applied`. A modified rule that turns out to be an egress rule is not ingress: listed, left.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::action::Principal;
use super::{Action, ApiCall, RespondError, ec2};
use crate::aws::{AccountSession, is_region_name};
use crate::net::{Cidr, range_non_public_reason};

/// Events older than this are not read (the lower(...) indexes are walked in time order).
pub(super) const LOOKBACK_DAYS: i32 = 90;
/// Events read per query page.
const PAGE: i64 = 500;
/// At most this many of the principal's events are read by one action; more is said.
const MAX_EVENTS: usize = 20_000;
/// At most this many rules that still exist are revoked by one action (two reads each).
const MAX_RULES: usize = 200;
/// At most this many rules are read live by one action (gone ones included).
const MAX_READS: usize = 1_000;

/// A rule the principal's events opened, with the event's item describing it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RuleRef {
    pub region: String,
    pub group_id: Option<String>,
    pub rule_id: String,
    pub event_id: String,
    /// The answer's `securityGroupRuleSet` item: what the live rule must still be.
    pub item: Value,
}

/// Why an event is not trusted: not EC2's, of another account, or no region.
pub(super) fn event_problem(raw: &Value, account_id: &str, region: Option<&str>) -> Option<String> {
    if raw["eventSource"].as_str() != Some("ec2.amazonaws.com") {
        return Some(format!("eventSource is {}, not ec2.amazonaws.com", raw["eventSource"]));
    }
    let accounts = [&raw["recipientAccountId"], &raw["userIdentity"]["accountId"]];
    if accounts.iter().all(|a| a.is_null()) {
        return Some("the event names no account (recipientAccountId, userIdentity.accountId)".into());
    }
    if let Some(other) = accounts.iter().find(|a| !a.is_null() && a.as_str() != Some(account_id)) {
        return Some(format!("the event is of account {other}, not {account_id}"));
    }
    match region.or_else(|| raw["awsRegion"].as_str()) {
        Some(region) if is_region_name(region) => None,
        other => Some(format!("the event's region {other:?} is not an AWS region name")),
    }
}

/// The ingress rules one `AuthorizeSecurityGroupIngress` event created, from its answer (or
/// those a `ModifySecurityGroupRules` event changed, from its request); `None` when it names no
/// rule id (CloudTrail before rule ids, or an answer left out).
pub(super) fn rules_of_event(
    event_id: &str,
    region: Option<&str>,
    raw: &Value,
    trusted: &[Cidr],
) -> Option<Vec<RuleRef>> {
    let region = region.or_else(|| raw["awsRegion"].as_str())?;
    if raw["eventName"].as_str().is_some_and(|name| name.eq_ignore_ascii_case(MODIFY)) {
        return rules_of_modification(event_id, region, raw, trusted);
    }
    let items = raw["responseElements"]["securityGroupRuleSet"]["items"].as_array()?;
    let rules: Vec<RuleRef> = items
        .iter()
        .filter(|rule| rule["isEgress"] != Value::Bool(true))
        .filter_map(|rule| {
            let rule_id = rule["securityGroupRuleId"].as_str()?;
            Some(RuleRef {
                region: region.to_owned(),
                group_id: rule["groupId"].as_str().map(str::to_owned),
                rule_id: rule_id.to_owned(),
                event_id: event_id.to_owned(),
                item: rule.clone(),
            })
        })
        .collect();
    (!rules.is_empty()).then_some(rules)
}

/// The event that changes existing rules in place (the rule id stays).
const MODIFY: &str = "ModifySecurityGroupRules";

/// One update of a `ModifySecurityGroupRules` request, judged: only an update that set an
/// exposed source opened the rule; any other (narrowing, a description, a private source) left
/// a pre-existing rule that is not the principal's to revoke.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Update {
    /// It set an exposed source: the rule is one the principal opened.
    Opened(RuleRef),
    /// It set a source that is not exposed: the rule was there before, and is left.
    PreExisting { rule_id: String, why: String },
    /// It names no protocol or not exactly one source: it cannot be judged or matched.
    Unresolved { rule_id: String, why: String },
}

/// The updates of a `ModifySecurityGroupRules` request, each with what it set as the item the
/// live rule must still be (the request's fields in the answer items' names). CloudTrail
/// writes `ModifySecurityGroupRulesRequest.SecurityGroupRule` as one object, or a list for
/// several: `{SecurityGroupRuleId, SecurityGroupRule: {IpProtocol, FromPort, ToPort, CidrIpv4,
/// CidrIpv6, PrefixListId, ReferencedGroupId, Description}}`. `None` without a group. A public
/// source within `trusted` (the detector's `security_group_ingress.trusted_cidrs`) is not exposed.
pub(super) fn modification_updates(request: &Value, trusted: &[Cidr]) -> Option<(String, Vec<Update>)> {
    let request = &request["ModifySecurityGroupRulesRequest"];
    let group = request["GroupId"].as_str()?;
    let updates = match &request["SecurityGroupRule"] {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![&request["SecurityGroupRule"]],
        _ => return None,
    };
    let judged = updates
        .into_iter()
        .filter_map(|update| Some((update["SecurityGroupRuleId"].as_str()?, &update["SecurityGroupRule"])))
        .map(|(rule_id, set)| judge_update(group, rule_id, set, trusted))
        .collect();
    Some((group.to_owned(), judged))
}

fn judge_update(group: &str, rule_id: &str, set: &Value, trusted: &[Cidr]) -> Update {
    let sources = ["CidrIpv4", "CidrIpv6", "PrefixListId", "ReferencedGroupId"];
    let named = sources.iter().filter(|field| !set[**field].is_null()).count();
    if set["IpProtocol"].is_null() || named != 1 {
        let why = format!(
            "the update names {named} sources and protocol {}: exactly one of each is needed",
            set["IpProtocol"]
        );
        return Update::Unresolved { rule_id: rule_id.to_owned(), why };
    }
    let cidr = set["CidrIpv4"].as_str().or(set["CidrIpv6"].as_str());
    if let Some(text) = cidr
        && text.parse::<Cidr>().is_err()
    {
        return Update::Unresolved {
            rule_id: rule_id.to_owned(),
            why: format!("the update's source {text:?} is not a CIDR"),
        };
    }
    if !cidr.is_some_and(|cidr| exposed(cidr, trusted)) {
        let trusted_range = if cidr.is_some_and(|cidr| exposed(cidr, &[])) { ", a trusted range" } else { "" };
        let why = format!(
            "the update set a source that is not exposed ({}{trusted_range}): the rule was there before",
            source_of(set)
        );
        return Update::PreExisting { rule_id: rule_id.to_owned(), why };
    }
    let mut item = json!({"groupId": group, "securityGroupRuleId": rule_id, "modified": true,
                          "ipProtocol": set["IpProtocol"], "fromPort": set["FromPort"], "toPort": set["ToPort"],
                          "cidrIpv4": set["CidrIpv4"], "cidrIpv6": set["CidrIpv6"],
                          "prefixListId": set["PrefixListId"]});
    if let Some(referenced) = set["ReferencedGroupId"].as_str() {
        item["referencedGroupInfo"] = json!({"groupId": referenced});
    }
    Update::Opened(RuleRef {
        region: String::new(),
        group_id: Some(group.to_owned()),
        rule_id: rule_id.to_owned(),
        event_id: String::new(),
        item,
    })
}

fn source_of(set: &Value) -> String {
    ["CidrIpv4", "CidrIpv6", "PrefixListId", "ReferencedGroupId"]
        .iter()
        .find_map(|field| set[*field].as_str().map(|v| format!("{field} {v}")))
        .unwrap_or_else(|| "no source".into())
}

/// Whether a source CIDR lets in the internet: the whole of it (any `/0`), or a range that does
/// not lie entirely within one non-public range or one of `trusted` (`0.0.0.0/1` starts with
/// an unspecified address and holds half the internet). The same notion as the
/// `aws-security-group-ingress-opened` detector's: its trusted ranges (`detectors.yaml`, which
/// `respond` cannot read: layering) come from the caller
/// ([`super::ResponseContext::trusted_cidrs`]). A prefix list or a group is never exposed.
pub(super) fn exposed(cidr: &str, trusted: &[Cidr]) -> bool {
    cidr.parse::<Cidr>()
        .is_ok_and(|c| c.is_world() || (range_non_public_reason(c).is_none() && !trusted.iter().any(|t| c.within(t))))
}

/// Whether the rule an `AuthorizeSecurityGroupIngress` answer item describes is exposed (see
/// [`exposed`]; a prefix list or a group is not); `None` when the item names no source (an
/// answer of before rule sources were written): it cannot be judged.
pub(super) fn item_exposed(item: &Value, trusted: &[Cidr]) -> Option<bool> {
    if let Some(cidr) = item["cidrIpv4"].as_str().or(item["cidrIpv6"].as_str()) {
        return Some(exposed(cidr, trusted));
    }
    let other = !item["prefixListId"].is_null() || !item["referencedGroupInfo"].is_null();
    other.then_some(false)
}

/// The rules a `ModifySecurityGroupRules` request opened (set an exposed source).
fn rules_of_modification(event_id: &str, region: &str, raw: &Value, trusted: &[Cidr]) -> Option<Vec<RuleRef>> {
    let (_, updates) = modification_updates(&raw["requestParameters"], trusted)?;
    let rules: Vec<RuleRef> = updates
        .into_iter()
        .filter_map(|update| match update {
            Update::Opened(rule) => Some(RuleRef { region: region.to_owned(), event_id: event_id.to_owned(), ..rule }),
            _ => None,
        })
        .collect();
    (!rules.is_empty()).then_some(rules)
}

/// Why the live rule is not the one the event opened (its id reused, or an event that lies):
/// its group must be the item's, and its protocol, ports and source where the item names them.
/// Both sides are normalised as AWS stores them first: protocol numbers as names (`6` is
/// `tcp`), no ports for all protocols, CIDRs with their host bits cleared in canonical form.
pub(super) fn mismatch(item: &Value, live: &Value) -> Option<String> {
    let Some(group) = item["groupId"].as_str() else {
        return Some("the event's answer names no group for the rule".into());
    };
    let all_protocols = protocol(&live["ip_protocol"]) == "-1" || protocol(&item["ipProtocol"]) == "-1";
    let pairs = [
        ("groupId", json!(group), &live["group_id"], Norm::Text),
        ("ipProtocol", item["ipProtocol"].clone(), &live["ip_protocol"], Norm::Protocol),
        ("fromPort", item["fromPort"].clone(), &live["from_port"], Norm::Port(all_protocols)),
        ("toPort", item["toPort"].clone(), &live["to_port"], Norm::Port(all_protocols)),
        ("cidrIpv4", item["cidrIpv4"].clone(), &live["cidr_ipv4"], Norm::Cidr),
        ("cidrIpv6", item["cidrIpv6"].clone(), &live["cidr_ipv6"], Norm::Cidr),
        ("prefixListId", item["prefixListId"].clone(), &live["prefix_list_id"], Norm::Text),
        (
            "referencedGroupInfo.groupId",
            item["referencedGroupInfo"]["groupId"].clone(),
            &live["referenced_group_id"],
            Norm::Text,
        ),
    ];
    let differ: Vec<String> = pairs
        .iter()
        .filter(|(_, event, _, _)| !event.is_null())
        .filter(|(_, event, now, norm)| norm.apply(event) != norm.apply(now))
        .map(|(field, event, now, _)| format!("{field} {event} in the event, {now} now"))
        .collect();
    (!differ.is_empty()).then(|| differ.join(", "))
}

/// How a field is compared.
#[derive(Clone, Copy)]
enum Norm {
    Text,
    Protocol,
    /// Ports, ignored when either side is all protocols (AWS stores -1/-1, requests say 0-65535).
    Port(bool),
    Cidr,
}

impl Norm {
    fn apply(self, value: &Value) -> String {
        match self {
            Norm::Text => same(value),
            Norm::Protocol => protocol(value),
            Norm::Port(true) => String::new(),
            Norm::Port(false) => same(value),
            Norm::Cidr => value.as_str().map_or_else(|| same(value), canonical_cidr),
        }
    }
}

/// A protocol as AWS answers it: `tcp`, `udp`, `icmp`, `icmpv6` for their numbers, `-1` for all.
fn protocol(value: &Value) -> String {
    match same(value).trim() {
        "6" => "tcp".into(),
        "17" => "udp".into(),
        "1" => "icmp".into(),
        "58" => "icmpv6".into(),
        "all" | "-1" => "-1".into(),
        other => other.to_owned(),
    }
}

/// A CIDR with its host bits cleared, the address in canonical form (`2001:DB8:0::1/64` is
/// `2001:db8::/64`); text that is no CIDR stays as it is (and so matches nothing parsed).
fn canonical_cidr(text: &str) -> String {
    let Ok(cidr) = text.parse::<Cidr>() else { return text.to_ascii_lowercase() };
    let address = match cidr.address {
        std::net::IpAddr::V4(v4) => {
            let mask = if cidr.prefix == 0 { 0 } else { u32::MAX << (32 - cidr.prefix) };
            std::net::IpAddr::V4((u32::from(v4) & mask).into())
        }
        std::net::IpAddr::V6(v6) => {
            let mask = if cidr.prefix == 0 { 0 } else { u128::MAX << (128 - cidr.prefix) };
            std::net::IpAddr::V6((u128::from(v6) & mask).into())
        }
    };
    format!("{address}/{}", cidr.prefix)
}

/// A value as text, so that `22` and `"22"` (CloudTrail writes both) compare equal.
fn same(value: &Value) -> String {
    match value {
        Value::String(text) => text.to_ascii_lowercase(),
        other => other.to_string(),
    }
}

/// One page of the principal's successful `AuthorizeSecurityGroupIngress` and
/// `ModifySecurityGroupRules` events in the account,
/// newest first, before `cursor`: a user's own calls and its federation sessions, or the
/// sessions of a role. `limit` rows at most; with `as_of`, only the events stored by then (those
/// the request's dry run and approval saw).
async fn page(
    pool: &PgPool,
    account_id: &str,
    principal: &Principal,
    cursor: Option<&(DateTime<Utc>, String)>,
    limit: i64,
    as_of: Option<DateTime<Utc>>,
) -> Result<Vec<(String, DateTime<Utc>, Option<String>, Value)>, sqlx::Error> {
    let (kind, name) = match principal {
        Principal::User(name) => ("user", name.as_str()),
        Principal::Role(name) => ("role", name.as_str()),
    };
    let rows = sqlx::query!(
        r#"SELECT event_id, event_time, region, raw FROM cloudtrail_events
           WHERE account_id = $1 AND lower(event_name) IN ('authorizesecuritygroupingress', 'modifysecuritygrouprules')
             AND error_code IS NULL
             AND lower(user_name) = lower($3) AND event_time > now() - make_interval(days => $5)
             AND ($6::timestamptz IS NULL OR (event_time, event_id) < ($6, $7))
             AND ($8::timestamptz IS NULL OR ingested_at <= $8)
             AND CASE WHEN $2 = 'user'
                      THEN (raw->'userIdentity'->>'type' = 'IAMUser'
                            AND lower(raw->'userIdentity'->>'userName') = lower($3))
                        OR (raw->'userIdentity'->>'type' = 'FederatedUser'
                            AND raw->'userIdentity'->'sessionContext'->'sessionIssuer'->>'type' = 'IAMUser'
                            AND lower(raw->'userIdentity'->'sessionContext'->'sessionIssuer'->>'userName') = lower($3))
                      ELSE raw->'userIdentity'->>'type' = 'AssumedRole'
                           AND raw->'userIdentity'->'sessionContext'->'sessionIssuer'->>'type' = 'Role'
                           AND lower(raw->'userIdentity'->'sessionContext'->'sessionIssuer'->>'userName') = lower($3)
                 END
           ORDER BY event_time DESC, event_id DESC LIMIT $4"#,
        account_id,
        kind,
        name,
        limit,
        LOOKBACK_DAYS,
        cursor.map(|c| c.0),
        cursor.map(|c| c.1.as_str()).unwrap_or_default(),
        as_of,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.event_id, r.event_time, r.region, r.raw)).collect())
}

/// Whether the principal opened any ingress rule in the account within [`LOOKBACK_DAYS`] (one
/// indexed row read: the suggestions on every alert page ask).
pub(super) async fn opened_any(pool: &PgPool, account_id: &str, principal: &Principal) -> Result<bool, sqlx::Error> {
    Ok(!page(pool, account_id, principal, None, 1, None).await?.is_empty())
}

/// One rule as read now: its recorded state, whether it is protected, whether it exists, and
/// why it must not be revoked (`mismatch`, `unreadable`) when it must not.
#[derive(Debug)]
pub(super) struct LiveRule {
    pub rule: RuleRef,
    pub state: Value,
    pub protected: bool,
    pub exists: bool,
    pub problem: Option<(&'static str, String)>,
}

/// What the action would do: every rule with its live state, newest event first, and what it
/// leaves undone (cut off, unresolved, mismatched, unreadable, refused).
pub(super) struct Observed {
    pub rules: Vec<LiveRule>,
    pub state: Value,
    pub incomplete: Vec<String>,
}

impl Observed {
    /// The rules apply revokes: those that exist, are the event's and are not protected.
    pub fn to_revoke(&self) -> impl Iterator<Item = &LiveRule> {
        self.rules.iter().filter(|r| r.exists && !r.protected && r.problem.is_none())
    }

    pub fn calls(&self) -> Vec<ApiCall> {
        self.to_revoke().map(|r| ec2::revoke_call(&r.state)).collect()
    }
}

/// Reads one rule live; a read error is that rule's outcome (`unreadable`), not the action's.
async fn read(session: &AccountSession, rule: RuleRef) -> LiveRule {
    match ec2::observe_rule(&session.ec2(&rule.region), &rule.region, &rule.rule_id).await {
        Ok(observed) => {
            let exists = observed.state["exists"] == json!(true);
            let problem =
                if exists { mismatch(&rule.item, &observed.state).map(|why| ("mismatch", why)) } else { None };
            LiveRule { rule, exists, protected: observed.protected, state: observed.state, problem }
        }
        Err(RespondError::Invalid { reason, .. }) if reason.ends_with(ec2::EGRESS) => {
            // A modification names no direction: an egress rule it changed opened no ingress.
            let state = json!({"rule_id": rule.rule_id, "exists": true, "egress": true});
            LiveRule { rule, exists: false, protected: false, state, problem: Some((EGRESS_PROBLEM, reason)) }
        }
        Err(error) => {
            tracing::warn!(rule_id = %rule.rule_id, region = %rule.region, error = %error,
                "revoke-principal-ingress: a rule could not be read; it is left alone");
            let state = json!({"rule_id": rule.rule_id, "exists": Value::Null});
            LiveRule { rule, exists: false, protected: false, state, problem: Some(("unreadable", error.to_string())) }
        }
    }
}

/// The problem of a modified rule that is an egress rule: not this action's, never incomplete.
const EGRESS_PROBLEM: &str = "egress";

/// What the events named, as read so far.
#[derive(Default)]
struct Reading {
    rules: Vec<LiveRule>,
    seen: HashSet<(String, String)>,
    unresolved: Vec<Value>,
    rejected: Vec<Value>,
    /// Rules a modification changed without opening them (left alone, listed).
    pre_existing: Vec<Value>,
    events: usize,
    existing: usize,
    cut_off: Option<String>,
}

impl Reading {
    /// Reads the rules of one event; false once the action's bounds are reached.
    async fn event(&mut self, session: &AccountSession, account_id: &str, row: &EventRow, trusted: &[Cidr]) -> bool {
        let (event_id, region, raw) = (&row.0, row.2.as_deref(), &row.3);
        if self.events == MAX_EVENTS {
            self.cut_off = Some(format!("more than {MAX_EVENTS} events: the oldest were not read"));
            return false;
        }
        self.events += 1;
        if let Some(why) = event_problem(raw, account_id, region) {
            self.rejected.push(json!({"event_id": event_id, "why": why}));
            return true;
        }
        if raw["eventName"].as_str().is_some_and(|name| name.eq_ignore_ascii_case(MODIFY)) {
            self.modification(event_id, region.or_else(|| raw["awsRegion"].as_str()), raw, trusted);
        }
        let Some(found) = rules_of_event(event_id, region, raw, trusted) else {
            if self.modification_judged(raw, trusted) {
                return true;
            }
            let request = &raw["requestParameters"];
            self.unresolved.push(json!({
                "event_id": event_id,
                "group": request["groupId"]
                    .as_str()
                    .or(request["groupName"].as_str())
                    .or(request["ModifySecurityGroupRulesRequest"]["GroupId"].as_str()),
                "why": "the event's answer names no rule id: compare the group's rules with its requestParameters",
            }));
            return true;
        };
        for rule in found {
            if !self.seen.insert((rule.region.clone(), rule.rule_id.clone())) {
                continue;
            }
            if self.existing == MAX_RULES || self.rules.len() == MAX_READS {
                self.cut_off = Some(format!(
                    "more than {MAX_RULES} rules still exist (or {MAX_READS} were read): the older ones were not \
                     read; apply again once this action is done for the rest"
                ));
                return false;
            }
            let live = read(session, rule).await;
            self.existing += usize::from(live.exists);
            self.rules.push(live);
        }
        true
    }
}

impl Reading {
    /// Lists a modification's updates that opened nothing (pre-existing rules, left) and those
    /// that cannot be judged (unresolved: never matched by their group alone). Events are read
    /// newest first: a rule this update set to a source that is not exposed is seen, so an
    /// older opening of it (widened, then narrowed to a trusted range) is not revoked.
    fn modification(&mut self, event_id: &str, region: Option<&str>, raw: &Value, trusted: &[Cidr]) {
        let Some((group, updates)) = modification_updates(&raw["requestParameters"], trusted) else { return };
        for update in updates {
            match update {
                Update::Opened(_) => {}
                Update::PreExisting { rule_id, why } => {
                    if let Some(region) = region {
                        self.seen.insert((region.to_owned(), rule_id.clone()));
                    }
                    self.pre_existing.push(json!({"event_id": event_id, "group_id": group, "rule_id": rule_id,
                                                  "pre_existing": true, "why": why}));
                }
                Update::Unresolved { rule_id, why } => {
                    self.unresolved.push(json!({"event_id": event_id, "group": group, "rule_id": rule_id, "why": why}));
                }
            }
        }
    }

    /// Whether a modification that opened no rule was fully listed by [`Self::modification`].
    fn modification_judged(&self, raw: &Value, trusted: &[Cidr]) -> bool {
        raw["eventName"].as_str().is_some_and(|name| name.eq_ignore_ascii_case(MODIFY))
            && modification_updates(&raw["requestParameters"], trusted).is_some_and(|(_, updates)| !updates.is_empty())
    }
}

type EventRow = (String, DateTime<Utc>, Option<String>, Value);

/// Reads every rule the principal's events opened with the responder session, newest first;
/// with `as_of` (the time the action was asked for), only the events stored by then: a rule
/// opened after the dry run and approval is not revoked by them. A modification to a source
/// within `trusted` opened nothing (the rule is listed as pre-existing).
pub(super) async fn observe(
    pool: &PgPool,
    session: &AccountSession,
    (account_id, principal): (&str, &Principal),
    as_of: Option<DateTime<Utc>>,
    trusted: &[Cidr],
) -> Result<Observed, RespondError> {
    let mut reading = Reading::default();
    let mut cursor = None;
    'pages: loop {
        let rows = page(pool, account_id, principal, cursor.as_ref(), PAGE, as_of).await?;
        let last_page = (rows.len() as i64) < PAGE;
        for row in &rows {
            if !reading.event(session, account_id, row, trusted).await {
                break 'pages;
            }
        }
        match rows.last() {
            Some(last) if !last_page => cursor = Some((last.1, last.0.clone())),
            _ => break,
        }
    }
    Ok(summarize(principal, reading))
}

/// The dry run's state and what the action leaves undone.
fn summarize(principal: &Principal, reading: Reading) -> Observed {
    let mut incomplete: Vec<String> = reading.cut_off.iter().cloned().collect();
    if !reading.unresolved.is_empty() {
        incomplete.push(format!("{} events name no rule id (unresolved_events)", reading.unresolved.len()));
    }
    if !reading.rejected.is_empty() {
        incomplete.push(format!("{} events are not trusted (rejected_events)", reading.rejected.len()));
    }
    let listed: Vec<Value> = reading
        .rules
        .iter()
        .map(|r| {
            let mut state = r.state.clone();
            state["region"] = json!(r.rule.region);
            state["event_id"] = json!(r.rule.event_id);
            state["protected"] = json!(r.protected);
            if state["group_id"].is_null() {
                state["group_id"] = json!(r.rule.group_id);
            }
            if let Some((problem, why)) = &r.problem {
                state["problem"] = json!(problem);
                state["why"] = json!(why);
            }
            state
        })
        .collect();
    for rule in &reading.rules {
        match &rule.problem {
            Some((EGRESS_PROBLEM, _)) => {}
            Some((problem, why)) => incomplete.push(format!("{} {problem}: {why}", rule.rule.rule_id)),
            None if rule.exists && rule.protected => {
                incomplete.push(format!("{} refused: tagged skywarden:protected", rule.rule.rule_id));
            }
            None => {}
        }
    }
    if !incomplete.is_empty() {
        tracing::warn!(principal = %principal.label(), left = incomplete.len(),
            "revoke-principal-ingress: some of the principal's rules are left: {}", incomplete.join("; "));
    }
    let state = json!({
        "principal": principal.label(),
        "events_read": reading.events,
        "lookback_days": LOOKBACK_DAYS,
        "cut_off": reading.cut_off,
        "rules": listed,
        "unresolved_events": reading.unresolved,
        "rejected_events": reading.rejected,
        "pre_existing": reading.pre_existing,
        "incomplete": incomplete,
    });
    Observed { rules: reading.rules, state, incomplete }
}

/// The plan an action fixes when it is asked for: the exact rules (id, region, group, the event
/// that opened them and that event's item: protocol, ports, source) and what the events left
/// undone. Approval acts on exactly these rules, each re-read and re-checked live
/// ([`observe_plan`]), whatever events arrive or go meanwhile.
pub(super) fn plan_of(observed: &Observed) -> Value {
    let rules: Vec<Value> = observed
        .rules
        .iter()
        .map(|r| {
            let (status, why) = request_time_status(r);
            json!({"rule_id": r.rule.rule_id, "region": r.rule.region, "group_id": r.rule.group_id,
                   "event_id": r.rule.event_id, "item": r.rule.item, "status": status, "why": why,
                   "revoke": status == "exists", "pre_existing": r.rule.item["modified"] == json!(true)})
        })
        .collect();
    let state = &observed.state;
    json!({
        "rules": rules,
        "to_revoke": observed.to_revoke().count(),
        "pre_existing": state["pre_existing"],
        "events_read": state["events_read"],
        "cut_off": state["cut_off"],
        "unresolved_events": state["unresolved_events"],
        "rejected_events": state["rejected_events"],
    })
}

/// The plan of a request whose rules could not be read (a throttle, AssumeRole refused): it is
/// recorded so (with its audit entry), and its approval is refused: it must be asked again.
pub(super) fn unreadable_plan(error: &RespondError) -> Value {
    json!({"unreadable": error.to_string(), "rules": [], "to_revoke": 0})
}

/// Why a stored plan could not be read when it was asked for, if it could not.
pub(super) fn plan_unreadable(plan: &Value) -> Option<String> {
    plan["unreadable"].as_str().map(str::to_owned)
}

/// A rule's status when the plan was fixed: `exists` (approval revokes it, if it is still the
/// same rule then), `gone`, `protected`, or its problem (`mismatch`, `unreadable`, `egress`).
fn request_time_status(rule: &LiveRule) -> (&'static str, Option<String>) {
    match &rule.problem {
        Some((problem, why)) => (problem, Some(why.clone())),
        None if !rule.exists => ("gone", None),
        None if rule.protected => ("protected", Some("tagged skywarden:protected".into())),
        None => ("exists", None),
    }
}

/// The rules of a stored plan; an entry that does not read is an error naming it.
fn planned_rules(plan: &Value) -> Result<Vec<RuleRef>, RespondError> {
    let bad = |why: String| RespondError::Invalid { field: "plan", reason: why };
    let rules = plan["rules"].as_array().ok_or_else(|| bad("the stored plan has no rules list".into()))?;
    rules
        .iter()
        .enumerate()
        .map(|(at, rule)| {
            let text = |field: &str| rule[field].as_str().map(str::to_owned);
            let (Some(rule_id), Some(region), Some(event_id)) = (text("rule_id"), text("region"), text("event_id"))
            else {
                return Err(bad(format!("rules[{at}] lacks rule_id, region or event_id")));
            };
            if !is_region_name(&region) {
                return Err(bad(format!("rules[{at}].region {region:?} is not an AWS region name")));
            }
            Ok(RuleRef { region, group_id: text("group_id"), rule_id, event_id, item: rule["item"].clone() })
        })
        .collect()
}

/// The rules of a stored plan read live: each must still be the rule its event opened (group,
/// protocol, ports, source), else it is left alone and reported; the plan's unresolved,
/// rejected and cut-off events stay reported. No event is read again.
pub(super) async fn observe_plan(
    session: &AccountSession,
    principal: &Principal,
    plan: &Value,
) -> Result<Observed, RespondError> {
    let list = |field: &str| plan[field].as_array().cloned().unwrap_or_default();
    let mut reading = Reading {
        unresolved: list("unresolved_events"),
        rejected: list("rejected_events"),
        pre_existing: list("pre_existing"),
        events: plan["events_read"].as_u64().and_then(|n| usize::try_from(n).ok()).unwrap_or_default(),
        cut_off: plan["cut_off"].as_str().map(str::to_owned),
        ..Reading::default()
    };
    let statuses: Vec<Option<String>> = plan["rules"]
        .as_array()
        .map(|rules| rules.iter().map(|r| r["status"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    for (at, rule) in planned_rules(plan)?.into_iter().enumerate() {
        let mut live = read(session, rule).await;
        // Approval runs exactly what the plan showed: a rule not revocable then is not now.
        if let Some(Some(status)) = statuses.get(at)
            && status != "exists"
            && live.problem.is_none()
            && live.exists
        {
            let why = format!("the plan showed it as {status}: approval revokes only the rules shown as existing");
            live.problem = Some(("not_planned", why));
        }
        reading.existing += usize::from(live.exists);
        reading.rules.push(live);
    }
    Ok(summarize(principal, reading))
}

/// The `revoke-ingress-rule` action of one rule, checked as the CLI's would be.
pub(super) fn child_action(live: &LiveRule) -> Result<Action, RespondError> {
    let group = live.state["group_id"].as_str().map(str::to_owned).or_else(|| live.rule.group_id.clone());
    let target = match group {
        Some(group) => format!("{group}:{}", live.rule.rule_id),
        None => live.rule.rule_id.clone(),
    };
    Action::parse("revoke-ingress-rule", &target, Some(&live.rule.region))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_come_from_the_answer_whatever_the_request_shape() {
        // The old single-rule shape (cidrIp at the top), by group name, with an egress item.
        let legacy = json!({
            "awsRegion": "eu-west-1",
            "requestParameters": {"groupName": "web", "cidrIp": "0.0.0.0/0", "ipProtocol": "tcp", "fromPort": 22, "toPort": 22},
            "responseElements": {"securityGroupRuleSet": {"items": [
                {"securityGroupRuleId": "sgr-0000000000000000a", "groupId": "sg-0000000000000000b", "isEgress": false},
                {"securityGroupRuleId": "sgr-0000000000000000c", "groupId": "sg-0000000000000000b", "isEgress": true}]}}
        });
        let rules = rules_of_event("e1", None, &legacy, &[]).unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].rule_id, "sgr-0000000000000000a");
        assert_eq!(rules[0].group_id.as_deref(), Some("sg-0000000000000000b"));
        assert_eq!(rules[0].region, "eu-west-1");
        // No rule id in the answer: unresolved, not silently nothing.
        assert!(
            rules_of_event("e2", Some("us-east-1"), &json!({"responseElements": {"_return": true}}), &[]).is_none()
        );
    }

    #[test]
    fn a_modification_names_the_rules_it_widened_with_what_it_set() {
        // CloudTrail's shape: one update as an object, several as a list; the answer has no rule.
        let one = json!({"eventName": "ModifySecurityGroupRules", "awsRegion": "eu-west-1",
            "requestParameters": {"ModifySecurityGroupRulesRequest": {"GroupId": "sg-1", "SecurityGroupRule": {
                "SecurityGroupRuleId": "sgr-0000000000000000a", "tag": 1,
                "SecurityGroupRule": {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "0.0.0.0/0"}}}},
            "responseElements": {"ModifySecurityGroupRulesResponse": {"return": true}}});
        let rules = rules_of_event("m1", None, &one, &[]).unwrap();
        assert_eq!(
            (rules.len(), rules[0].rule_id.as_str(), rules[0].group_id.as_deref()),
            (1, "sgr-0000000000000000a", Some("sg-1"))
        );
        let live =
            json!({"group_id": "sg-1", "ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ipv4": "0.0.0.0/0"});
        assert_eq!(mismatch(&rules[0].item, &live), None);
        let narrowed = json!({"group_id": "sg-1", "ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ipv4": "10.0.0.0/8"});
        assert!(mismatch(&rules[0].item, &narrowed).unwrap().contains("cidrIpv4"), "changed back since: left alone");
        let mut two = one.clone();
        let update = two["requestParameters"]["ModifySecurityGroupRulesRequest"]["SecurityGroupRule"].clone();
        let mut other = update.clone();
        other["SecurityGroupRuleId"] = json!("sgr-0000000000000000b");
        other["SecurityGroupRule"] =
            json!({"IpProtocol": "-1", "FromPort": -1, "ToPort": -1, "ReferencedGroupId": "sg-9"});
        two["requestParameters"]["ModifySecurityGroupRulesRequest"]["SecurityGroupRule"] = json!([update, other]);
        let rules = rules_of_event("m2", None, &two, &[]).unwrap();
        assert_eq!(rules.len(), 1, "a group as source opens nothing to the internet: {rules:?}");
        let mut none = one.clone();
        none["requestParameters"]["ModifySecurityGroupRulesRequest"]["SecurityGroupRule"] = json!({"tag": 1});
        assert!(rules_of_event("m3", None, &none, &[]).is_none(), "no rule id: unresolved");
    }

    fn modify(updates: Value) -> Value {
        json!({"eventName": "ModifySecurityGroupRules", "awsRegion": "eu-west-1",
               "requestParameters": {"ModifySecurityGroupRulesRequest": {"GroupId": "sg-1", "SecurityGroupRule": updates}}})
    }

    fn update(rule_id: &str, set: Value) -> Value {
        json!({"SecurityGroupRuleId": rule_id, "SecurityGroupRule": set})
    }

    #[test]
    fn only_updates_that_set_an_exposed_source_are_openings() {
        // A opens 22 to the world; B only changes the description of the office rule.
        let event = modify(json!([
            update("sgr-a", json!({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "0.0.0.0/0"})),
            update(
                "sgr-b",
                json!({"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIpv4": "10.0.0.0/8",
                                   "Description": "office"})
            ),
            update("sgr-c", json!({"IpProtocol": "-1", "CidrIpv6": "::/0"})),
            update("sgr-d", json!({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "81.2.69.160/32"})),
            update("sgr-e", json!({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "PrefixListId": "pl-1"})),
        ]));
        let ids: Vec<String> = rules_of_event("m", None, &event, &[]).unwrap().into_iter().map(|r| r.rule_id).collect();
        assert_eq!(ids, ["sgr-a", "sgr-c", "sgr-d"], "the world, ::/0 and a public address; not 10/8, not a list");
        let (_, judged) = modification_updates(&event["requestParameters"], &[]).unwrap();
        assert!(matches!(&judged[1], Update::PreExisting { rule_id, .. } if rule_id == "sgr-b"));
        let narrowed = modify(update(
            "sgr-a",
            json!({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "192.168.1.0/24"}),
        ));
        assert!(rules_of_event("m", None, &narrowed, &[]).is_none(), "narrowing to a private range opens nothing");
    }

    #[test]
    fn a_source_within_the_trusted_ranges_is_not_exposed_the_world_always_is() {
        let trusted: Vec<Cidr> = vec!["81.2.69.0/24".parse().unwrap()];
        let event = modify(json!([
            update("sgr-a", json!({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "81.2.69.160/32"})),
            update("sgr-b", json!({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "81.2.70.1/32"})),
            update("sgr-c", json!({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "0.0.0.0/0"})),
        ]));
        let ids: Vec<String> =
            rules_of_event("m", None, &event, &trusted).unwrap().into_iter().map(|r| r.rule_id).collect();
        assert_eq!(ids, ["sgr-b", "sgr-c"], "the office /24 is trusted; its neighbour and the world are not");
        let (_, judged) = modification_updates(&event["requestParameters"], &trusted).unwrap();
        assert!(
            matches!(&judged[0], Update::PreExisting { rule_id, why } if rule_id == "sgr-a" && why.contains("a trusted range")),
            "{judged:?}"
        );
        assert!(exposed("81.2.69.160/32", &[]), "without trusted ranges a public address is exposed");
        let world: Vec<Cidr> = vec!["0.0.0.0/0".parse().unwrap()];
        assert!(exposed("0.0.0.0/0", &world), "the whole internet is exposed even when declared trusted");
    }

    #[test]
    fn a_range_is_not_exposed_only_when_all_of_it_is_non_public_or_trusted() {
        // Their first addresses (0.0.0.0, 192.0.0.0) are not public; the ranges are mostly public.
        assert!(exposed("0.0.0.0/1", &[]), "half the internet");
        assert!(exposed("192.0.0.0/2", &[]), "a quarter of the internet");
        assert!(!exposed("10.0.0.0/8", &[]) && !exposed("10.20.0.0/16", &[]) && !exposed("fd00::/8", &[]));
        let trusted: Vec<Cidr> = vec!["81.2.69.0/24".parse().unwrap()];
        assert!(exposed("81.2.68.0/23", &trusted), "wider than the trusted /24");
        assert!(!exposed("81.2.69.128/25", &trusted));
        let event = modify(update(
            "sgr-a",
            json!({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIpv4": "0.0.0.0/1"}),
        ));
        assert_eq!(rules_of_event("m", None, &event, &[]).map(|r| r.len()), Some(1), "a /1 opens the rule");
    }

    #[test]
    fn an_update_without_protocol_or_one_source_is_unresolved_never_matched_by_group() {
        let no_protocol = update("sgr-a", json!({"CidrIpv4": "0.0.0.0/0"}));
        let two_sources = update("sgr-b", json!({"IpProtocol": "tcp", "CidrIpv4": "0.0.0.0/0", "CidrIpv6": "::/0"}));
        let no_source = update("sgr-c", json!({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}));
        let event = modify(json!([no_protocol, two_sources, no_source]));
        assert!(rules_of_event("m", None, &event, &[]).is_none());
        let (_, judged) = modification_updates(&event["requestParameters"], &[]).unwrap();
        assert!(judged.iter().all(|u| matches!(u, Update::Unresolved { .. })), "{judged:?}");
    }

    #[test]
    fn request_values_compare_as_aws_stores_them() {
        let live = json!({"group_id": "sg-1", "ip_protocol": "tcp", "from_port": 22, "to_port": 22,
                          "cidr_ipv4": "0.0.0.0/0", "cidr_ipv6": null});
        let numbered =
            json!({"groupId": "sg-1", "ipProtocol": "6", "fromPort": 22, "toPort": 22, "cidrIpv4": "0.0.0.0/0"});
        assert_eq!(mismatch(&numbered, &live), None, "6 is tcp");
        assert_eq!(mismatch(&json!({"groupId": "sg-1", "ipProtocol": "TCP"}), &live), None, "names in any case");
        for (number, name) in [("17", "udp"), ("1", "icmp"), ("58", "icmpv6")] {
            let live = json!({"group_id": "sg-1", "ip_protocol": name});
            assert_eq!(mismatch(&json!({"groupId": "sg-1", "ipProtocol": number}), &live), None, "{number}");
        }
        let all_live = json!({"group_id": "sg-1", "ip_protocol": "-1", "from_port": -1, "to_port": -1});
        let all_item = json!({"groupId": "sg-1", "ipProtocol": "-1", "fromPort": 0, "toPort": 65535});
        assert_eq!(mismatch(&all_item, &all_live), None, "ports mean nothing for all protocols");
        let v6_live = json!({"group_id": "sg-1", "cidr_ipv6": "2001:db8::/64"});
        let v6_item = json!({"groupId": "sg-1", "cidrIpv6": "2001:DB8:0:0:0000::1/64"});
        assert_eq!(mismatch(&v6_item, &v6_live), None, "canonical IPv6, host bits cleared");
        let v4_live = json!({"group_id": "sg-1", "cidr_ipv4": "203.0.113.0/24"});
        assert_eq!(mismatch(&json!({"groupId": "sg-1", "cidrIpv4": "203.0.113.9/24"}), &v4_live), None);
        assert!(mismatch(&json!({"groupId": "sg-1", "cidrIpv4": "203.0.114.0/24"}), &v4_live).is_some());
        assert!(mismatch(&json!({"groupId": "sg-1", "ipProtocol": "17"}), &live).is_some(), "udp is not tcp");
    }

    #[test]
    fn the_plan_keeps_each_rules_status_when_asked_for() {
        let rule = |id: &str| RuleRef {
            region: "eu-west-1".into(),
            group_id: Some("sg-1".into()),
            rule_id: id.into(),
            event_id: "e".into(),
            item: json!({"groupId": "sg-1"}),
        };
        let live = |id: &str, exists: bool, problem: Option<(&'static str, String)>| LiveRule {
            rule: rule(id),
            state: json!({"rule_id": id, "group_id": "sg-1", "exists": exists}),
            protected: false,
            exists,
            problem,
        };
        let reading = Reading {
            rules: vec![
                live("sgr-1", true, None),
                live("sgr-2", false, None),
                live("sgr-3", true, Some(("mismatch", "cidrIpv4".into()))),
            ],
            ..Reading::default()
        };
        let observed = summarize(&Principal::User("alice".into()), reading);
        let plan = plan_of(&observed);
        let statuses: Vec<&str> =
            plan["rules"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["exists", "gone", "mismatch"]);
        assert_eq!(plan["to_revoke"], 1);
        let unreadable = unreadable_plan(&RespondError::Conflict("Throttling".into()));
        assert_eq!(plan_unreadable(&unreadable).as_deref(), Some("Throttling"));
        assert_eq!(plan_unreadable(&plan), None);
    }

    #[test]
    fn a_stored_plan_reads_back_and_a_bad_one_is_refused_naming_the_entry() {
        let plan = json!({"rules": [{"rule_id": "sgr-1", "region": "eu-west-1", "group_id": "sg-1", "event_id": "e1",
                                     "item": {"groupId": "sg-1", "fromPort": 22}}]});
        let rules = planned_rules(&plan).unwrap();
        assert_eq!((rules[0].rule_id.as_str(), rules[0].item["fromPort"].as_i64()), ("sgr-1", Some(22)));
        let bad =
            json!({"rules": [plan["rules"][0].clone(), {"rule_id": "sgr-2", "region": "../x", "event_id": "e2"}]});
        assert!(planned_rules(&bad).unwrap_err().to_string().contains("rules[1].region"));
        assert!(planned_rules(&json!({})).is_err());
    }

    #[test]
    fn only_ec2_events_of_the_account_in_a_region_are_trusted() {
        let ok = json!({"eventSource": "ec2.amazonaws.com", "awsRegion": "eu-west-1",
                        "recipientAccountId": "111122223333", "userIdentity": {"accountId": "111122223333"}});
        assert_eq!(event_problem(&ok, "111122223333", None), None);
        let mut other = ok.clone();
        other["recipientAccountId"] = json!("444455556666");
        assert!(event_problem(&other, "111122223333", None).unwrap().contains("444455556666"));
        let mut caller = ok.clone();
        caller["userIdentity"]["accountId"] = json!("444455556666");
        assert!(event_problem(&caller, "111122223333", None).is_some(), "a caller of another account");
        let mut source = ok.clone();
        source["eventSource"] = json!("evil.example.com");
        assert!(event_problem(&source, "111122223333", None).unwrap().contains("eventSource"));
        assert!(event_problem(&ok, "111122223333", Some("../../etc")).unwrap().contains("region"));
        assert!(
            event_problem(&json!({"eventSource": "ec2.amazonaws.com", "awsRegion": "eu-west-1"}), "1", None)
                .unwrap()
                .contains("no account")
        );
    }

    #[test]
    fn a_live_rule_must_be_the_one_the_event_opened() {
        let live = json!({"group_id": "sg-1", "ip_protocol": "tcp", "from_port": 22, "to_port": 22,
                          "cidr_ipv4": "198.51.100.7/32", "cidr_ipv6": null});
        let item = json!({"groupId": "sg-1", "ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "cidrIpv4": "198.51.100.7/32"});
        assert_eq!(mismatch(&item, &live), None);
        assert_eq!(mismatch(&json!({"groupId": "sg-1"}), &live), None, "fields the event lacks are not compared");
        let other_group = json!({"groupId": "sg-2"});
        assert!(mismatch(&other_group, &live).unwrap().contains("groupId"));
        let wider = json!({"groupId": "sg-1", "fromPort": 0, "toPort": 65535});
        assert!(mismatch(&wider, &live).unwrap().contains("fromPort"));
        assert!(mismatch(&json!({}), &live).is_some(), "no group: not trusted");
    }
}
