//! The whole organisation in memory, with the indexes the decisions need, changed only by
//! applying [`Change`]s. Pure data: the same changes in the same order give the same state.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use foldhash::fast::RandomState;

/// Ids are attacker-influenced, so the hasher is seeded; foldhash is fast and seeded.
type HashMap<K, V> = std::collections::HashMap<K, V, RandomState>;

use super::model::{
    Assignment, Connector, Device, Failure, Failures, Group, GroupKind, Policy, TenantSettings, Timestamp, User,
};
use super::table::{Ids, Record, Table};

/// One durable change. The store logs these with their revision; replicas replay them.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    PutUser(User),
    DeleteUser(String),
    PutGroup(Group),
    DeleteGroup(String),
    PutDevice(Device),
    /// A report that changed nothing of the Mac but when it checked in: the log and the store
    /// keep the time, not the whole device again.
    CheckIn {
        device_id: String,
        at: Timestamp,
    },
    DeleteDevice(String),
    PutPolicy(Policy),
    DeletePolicy(String),
    /// An assignment with no groups removes the policy's assignment.
    PutAssignment(Assignment),
    PutConnector(Connector),
    PutSettings(TenantSettings),
    /// A device fails a policy: when its failure began to count and when its grace period
    /// ends. Derived by the write that made it so (see `domain::grace`).
    PutFailing {
        device_id: String,
        policy_id: String,
        failure: Failure,
    },
    /// The device no longer fails the policy (or it no longer applies, or the device's records
    /// were removed with its connector).
    DeleteFailing {
        device_id: String,
        policy_id: String,
    },
    /// When the partner was last heard from (written at most once a minute).
    PutHeartbeat(Timestamp),
}

/// Which cached decisions a change can affect.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    /// Every decision (policies, assignments, connector, tenant settings, large groups).
    pub all: bool,
    pub devices: HashSet<String>,
}

impl Touched {
    pub fn merge(&mut self, other: Touched) {
        self.all |= other.all;
        if !self.all {
            self.devices.extend(other.devices);
        }
    }
}

/// A targeting configuration (the connector's) as sets, so that a user's groups are checked in
/// O(their count).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    pub(super) include: std::collections::HashSet<String, RandomState>,
    pub(super) exclude: std::collections::HashSet<String, RandomState>,
}

impl Targets {
    pub fn new(include: &[String], exclude: &[String]) -> Targets {
        Targets { include: include.iter().cloned().collect(), exclude: exclude.iter().cloned().collect() }
    }
}

/// Devices are found by id, by serial number (duplicates) and by primary user.
const SERIAL: usize = 1;
const USER: usize = 2;

impl Record for Device {
    const KEYS: usize = 3;
    fn key(&self, k: usize) -> &str {
        match k {
            0 => &self.id,
            SERIAL => &self.serial_number,
            _ => &self.user_id,
        }
    }
}

impl Record for User {
    const KEYS: usize = 1;
    fn key(&self, _: usize) -> &str {
        &self.id
    }
}

/// Dense numbers for member ids (users, devices, or ids not known yet): a million users'
/// memberships are numbers rather than copies of their ids, and counting over them is array
/// work rather than hashing (PreviewTargeting).
#[derive(Debug, Default, Clone)]
struct Slots {
    ids: Ids,
    /// Per slot: is it a known user?
    is_user: Vec<bool>,
    /// Per slot: how many devices have it as their primary user.
    devices: Vec<u32>,
    /// Per slot: the numbers of the groups it is a member of.
    groups: Vec<Vec<u32>>,
}

impl Slots {
    fn slot(&mut self, id: &str) -> usize {
        let s = self.ids.intern(id) as usize;
        if s == self.is_user.len() {
            self.is_user.push(false);
            self.devices.push(0);
            self.groups.push(Vec::new());
        }
        s
    }
}

/// A group as the state keeps it: its members by slot.
#[derive(Debug, Clone)]
struct StoredGroup {
    name: String,
    kind: GroupKind,
    members: Vec<u32>,
}

/// A directory group in the state, its members resolved to ids as they are read.
#[derive(Debug, Clone, Copy)]
pub struct GroupRef<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub kind: GroupKind,
    members: &'a [u32],
    slots: &'a Slots,
}

impl<'a> GroupRef<'a> {
    pub fn members(&self) -> impl Iterator<Item = &'a str> + 'a {
        let slots = self.slots;
        self.members.iter().map(move |s| slots.ids.name(*s))
    }
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
    pub fn to_group(&self) -> Group {
        Group {
            id: self.id.to_string(),
            name: self.name.to_string(),
            kind: self.kind,
            members: self.members().map(str::to_string).collect(),
        }
    }
}

impl PartialEq<Group> for GroupRef<'_> {
    fn eq(&self, g: &Group) -> bool {
        self.id == g.id
            && self.name == g.name
            && self.kind == g.kind
            && self.members.len() == g.members.len()
            && self.members().eq(g.members.iter().map(String::as_str))
    }
}

/// Above this many affected devices a change simply drops every cached decision.
const TOUCH_ALL_ABOVE: usize = 10_000;

/// The whole organisation in memory. Each index is shared until written (`Arc::make_mut`), so
/// a copy (PreviewPolicy's) costs a few reference counts, and writing to it copies only the
/// indexes it changes.
#[derive(Debug, Default, Clone)]
pub struct State {
    users: Arc<Table<User>>,
    /// Group ids, numbered.
    group_ids: Arc<Ids>,
    groups: Arc<HashMap<u32, StoredGroup>>,
    devices: Arc<Table<Device>>,
    policies: BTreeMap<String, Policy>,
    assignments: HashMap<String, Assignment>,
    connector: Connector,
    /// The connector's include and exclude groups as sets.
    connector_targets: Targets,
    settings: TenantSettings,
    /// device id → (policy id → its failure of that policy). Kept when a device record is
    /// deleted, so that the Mac's next report continues its failures rather than starting them
    /// afresh.
    failing: Arc<HashMap<Box<str>, Failures>>,
    heartbeat: Option<Timestamp>,
    slots: Arc<Slots>,
}

impl State {
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.get(id)
    }
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.iter()
    }
    pub fn user_count(&self) -> usize {
        self.users.len()
    }
    pub fn group(&self, id: &str) -> Option<GroupRef<'_>> {
        let n = self.group_ids.get(id)?;
        self.groups.get(&n).map(|g| self.group_ref(n, g))
    }
    pub fn groups(&self) -> impl Iterator<Item = GroupRef<'_>> {
        self.groups.iter().map(|(n, g)| self.group_ref(*n, g))
    }
    fn group_ref<'a>(&'a self, n: u32, g: &'a StoredGroup) -> GroupRef<'a> {
        GroupRef { id: self.group_ids.name(n), name: &g.name, kind: g.kind, members: &g.members, slots: &self.slots }
    }
    /// Ids of the groups (of either kind) that `member_id` belongs to.
    pub fn groups_of<'a>(&'a self, member_id: &str) -> impl Iterator<Item = &'a str> + Clone + use<'a> {
        let numbers = self.slots.ids.get(member_id).map_or(&[][..], |s| &self.slots.groups[s as usize]);
        numbers.iter().map(|n| self.group_ids.name(*n))
    }
    /// Whether `member_id` is a member of the group `group_id` (of either kind).
    pub fn in_group(&self, member_id: &str, group_id: &str) -> bool {
        let (Some(s), Some(g)) = (self.slots.ids.get(member_id), self.group_ids.get(group_id)) else { return false };
        self.slots.groups[s as usize].contains(&g)
    }
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.iter()
    }
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }
    /// The ids of the devices whose primary user is `user_id`, in no particular order.
    pub fn devices_of_user<'a>(&'a self, user_id: &'a str) -> impl Iterator<Item = &'a str> + Clone + use<'a> {
        self.devices.find(USER, user_id).map(|d| &*d.id)
    }
    /// The ids of every device record with this serial number, in no particular order: more
    /// than one is a duplicate registration.
    pub fn devices_with_serial<'a>(&'a self, serial: &'a str) -> impl Iterator<Item = &'a str> + Clone + use<'a> {
        self.devices.find(SERIAL, serial).map(|d| &*d.id)
    }
    pub fn policy(&self, id: &str) -> Option<&Policy> {
        self.policies.get(id)
    }
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }
    pub fn assignment(&self, policy_id: &str) -> Option<&Assignment> {
        self.assignments.get(policy_id)
    }
    pub fn connector(&self) -> &Connector {
        &self.connector
    }
    pub fn connector_targets(&self) -> &Targets {
        &self.connector_targets
    }
    pub fn settings(&self) -> &TenantSettings {
        &self.settings
    }
    /// `device_id`'s failure of `policy_id`, if it fails it.
    pub fn failure(&self, device_id: &str, policy_id: &str) -> Option<Failure> {
        self.failing.get(device_id).and_then(|f| f.get(policy_id))
    }
    /// Every policy `device_id` fails, with its failure.
    pub fn failures_of(&self, device_id: &str) -> impl Iterator<Item = (&str, Failure)> {
        self.failing.get(device_id).into_iter().flat_map(Failures::iter)
    }
    /// Every device with a failure of `policy_id` on record.
    pub fn devices_failing(&self, policy_id: &str) -> impl Iterator<Item = &str> {
        self.failing.iter().filter(move |(_, f)| f.contains(policy_id)).map(|(d, _)| &**d)
    }
    /// When the partner was last heard from.
    pub fn heartbeat(&self) -> Option<Timestamp> {
        self.heartbeat
    }

    /// The members' slots of a user group (empty for other groups).
    pub fn group_member_slots(&self, group_id: &str) -> &[u32] {
        match self.group_ids.get(group_id).and_then(|n| self.groups.get(&n)) {
            Some(g) if g.kind == GroupKind::User => &g.members,
            _ => &[],
        }
    }

    /// Per slot (see [`State::group_member_slots`]): whether it is a known user, and how many
    /// devices it is the primary user of.
    pub fn slots(&self) -> (&[bool], &[u32]) {
        (&self.slots.is_user, &self.slots.devices)
    }

    /// Room for this many more users and devices, so that loading a large organisation does
    /// not grow its tables step by step.
    pub fn reserve(&mut self, users: usize, devices: usize) {
        Arc::make_mut(&mut self.users).reserve(users);
        Arc::make_mut(&mut self.devices).reserve(devices);
        let slots = Arc::make_mut(&mut self.slots);
        slots.ids.reserve(users);
        slots.is_user.reserve(users);
        slots.devices.reserve(users);
        slots.groups.reserve(users);
    }

    /// Applies one change and says which decisions it can have changed.
    pub fn apply(&mut self, change: Change) -> Touched {
        let touched = self.touched_by(&change);
        self.restore(change);
        touched
    }

    /// Applies one change without working out what it touches: for a state read back from
    /// the store, before anything is cached.
    pub fn restore(&mut self, change: Change) {
        match change {
            Change::PutUser(user) => {
                let slot = Arc::make_mut(&mut self.slots).slot(&user.id);
                Arc::make_mut(&mut self.slots).is_user[slot] = true;
                Arc::make_mut(&mut self.users).insert(user);
            }
            Change::DeleteUser(id) => {
                let slot = Arc::make_mut(&mut self.slots).slot(&id);
                Arc::make_mut(&mut self.slots).is_user[slot] = false;
                Arc::make_mut(&mut self.users).remove(&id);
            }
            Change::PutGroup(group) => {
                let n = Arc::make_mut(&mut self.group_ids).intern(&group.id);
                if let Some(old) = Arc::make_mut(&mut self.groups).remove(&n) {
                    self.unindex_members(n, &old);
                }
                let slots = Arc::make_mut(&mut self.slots);
                let members: Vec<u32> = group.members.iter().map(|m| slots.slot(m) as u32).collect();
                for m in &members {
                    slots.groups[*m as usize].push(n);
                }
                let stored = StoredGroup { name: group.name, kind: group.kind, members };
                Arc::make_mut(&mut self.groups).insert(n, stored);
            }
            Change::DeleteGroup(id) => {
                let Some(n) = self.group_ids.get(&id) else { return };
                if let Some(old) = Arc::make_mut(&mut self.groups).remove(&n) {
                    self.unindex_members(n, &old);
                }
            }
            Change::PutDevice(device) => {
                let slots = Arc::make_mut(&mut self.slots);
                let slot = slots.slot(&device.user_id);
                slots.devices[slot] += 1;
                if let (_, Some(old)) = Arc::make_mut(&mut self.devices).insert(device) {
                    self.uncount_device(&old);
                }
            }
            Change::CheckIn { device_id, at } => {
                Arc::make_mut(&mut self.devices).modify(&device_id, |d| d.last_check_in = at);
            }
            Change::DeleteDevice(id) => self.delete_device(&id),
            Change::PutPolicy(policy) => {
                self.policies.insert(policy.id.clone(), policy);
            }
            Change::DeletePolicy(id) => {
                self.policies.remove(&id);
                self.assignments.remove(&id);
                Arc::make_mut(&mut self.failing).retain(|_, f| {
                    f.remove(&id);
                    !f.is_empty()
                });
            }
            Change::PutAssignment(a) => {
                if a.include_group_ids.is_empty() && a.exclude_group_ids.is_empty() {
                    self.assignments.remove(&a.policy_id);
                } else {
                    self.assignments.insert(a.policy_id.clone(), a);
                }
            }
            Change::PutConnector(c) => {
                self.connector_targets = Targets::new(&c.include_group_ids, &c.exclude_group_ids);
                self.connector = c;
            }
            Change::PutSettings(s) => self.settings = s,
            Change::PutFailing { device_id, policy_id, failure } => {
                Arc::make_mut(&mut self.failing).entry(device_id.into()).or_default().insert(&policy_id, failure);
            }
            Change::DeleteFailing { device_id, policy_id } => {
                if let Some(f) = Arc::make_mut(&mut self.failing).get_mut(&*device_id) {
                    f.remove(&policy_id);
                    if f.is_empty() {
                        Arc::make_mut(&mut self.failing).remove(&*device_id);
                    }
                }
            }
            Change::PutHeartbeat(at) => self.heartbeat = Some(at),
        }
    }

    /// Which decisions `change` can change, worked out before it is applied.
    fn touched_by(&self, change: &Change) -> Touched {
        let all = || Touched { all: true, ..Touched::default() };
        match change {
            Change::PutUser(User { id, .. }) | Change::DeleteUser(id) => self.devices_of_users([id.as_str()]),
            Change::PutGroup(group) => {
                let mut touched = self.group(&group.id).map_or_else(Touched::default, |g| self.group_touch(&g));
                let members = group.members.iter().map(String::as_str);
                touched.merge(self.members_touch(group.kind, group.members.len(), members));
                touched
            }
            Change::DeleteGroup(id) => self.group(id).map_or_else(Touched::default, |g| self.group_touch(&g)),
            Change::PutDevice(device) => {
                let mut touched = self.device_touch(&device.id);
                touched.devices.insert(device.id.to_string());
                touched.devices.extend(self.devices_with_serial(&device.serial_number).map(str::to_string));
                touched
            }
            // Its serial is unchanged: the device and the records that share the serial.
            Change::CheckIn { device_id, .. } => self.device_touch(device_id),
            Change::DeleteDevice(id) => self.device_touch(id),
            Change::PutPolicy(_)
            | Change::DeletePolicy(_)
            | Change::PutAssignment(_)
            | Change::PutConnector(_)
            | Change::PutSettings(_) => all(),
            Change::PutFailing { device_id, .. } | Change::DeleteFailing { device_id, .. } => {
                Touched { all: false, devices: HashSet::from([device_id.clone()]) }
            }
            // Not a decision input: nothing cached depends on it.
            Change::PutHeartbeat(_) => Touched::default(),
        }
    }

    fn devices_of_users<'a>(&self, users: impl IntoIterator<Item = &'a str>) -> Touched {
        let mut touched = Touched::default();
        for u in users {
            touched.devices.extend(self.devices_of_user(u).map(str::to_string));
            if touched.devices.len() > TOUCH_ALL_ABOVE {
                return Touched { all: true, ..Touched::default() };
            }
        }
        touched
    }

    fn group_touch(&self, group: &GroupRef<'_>) -> Touched {
        self.members_touch(group.kind, group.member_count(), group.members())
    }

    /// A user group's members' devices; a device group's member devices (for diagnosis).
    fn members_touch<'a>(&self, kind: GroupKind, count: usize, ids: impl Iterator<Item = &'a str>) -> Touched {
        if count > TOUCH_ALL_ABOVE {
            return Touched { all: true, ..Touched::default() };
        }
        match kind {
            GroupKind::User => self.devices_of_users(ids),
            GroupKind::Device => Touched { all: false, devices: ids.map(str::to_string).collect() },
        }
    }

    /// A device and the records that share its serial (nothing when it has no record).
    fn device_touch(&self, id: &str) -> Touched {
        let devices = match self.device(id) {
            Some(old) => self.devices_with_serial(&old.serial_number).map(str::to_string).collect(),
            None => HashSet::new(),
        };
        Touched { all: false, devices }
    }

    fn delete_device(&mut self, id: &str) {
        if let Some(old) = Arc::make_mut(&mut self.devices).remove(id) {
            self.uncount_device(&old);
        }
    }

    fn uncount_device(&mut self, old: &Device) {
        let slots = Arc::make_mut(&mut self.slots);
        let slot = slots.slot(&old.user_id);
        slots.devices[slot] -= 1;
    }

    fn unindex_members(&mut self, n: u32, group: &StoredGroup) {
        let slots = Arc::make_mut(&mut self.slots);
        for m in &group.members {
            slots.groups[*m as usize].retain(|g| *g != n);
        }
    }
}
