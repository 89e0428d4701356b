// Branches, from the server's session metadata (GET /sessions?detail=true).
//
// Editing or regenerating a turn forks the session: the fork holds the parent's first
// `fork_point` messages and then goes its own way. So message i of a session was written
// in the session itself, or -- when i < fork_point -- inherited from its parent. The
// versions of turn i are the sessions that diverge from one another exactly there: the
// nearest ancestor that all of them share message i-1 with ("anchor"), and every
// session that departs from that lineage at i. Sessions that inherit the same message i
// are one version; switching to it opens the one used most recently.

// details: [{id, parent, fork_point, message_count, created, updated}]
export function indexSessions(details) {
  return new Map(details.map((session) => [session.id, session]));
}

// The session whose own message `index` is, as seen from `id` (an absent parent counts
// by its id, so its orphaned forks still agree with one another).
function author(byId, id, index) {
  let key = id;
  let session = byId.get(id);
  while (session?.parent && index < session.fork_point) {
    key = session.parent;
    session = byId.get(key);
  }
  return key;
}

// The session the versions of turn `index` branch off from, as seen from `id`.
function anchor(byId, id, index) {
  let key = id;
  let session = byId.get(id);
  while (session?.parent && index <= session.fork_point) {
    key = session.parent;
    session = byId.get(key);
  }
  return key;
}

// {position, total, targets} for turn `index` of session `id`, or null when there is one
// version only. targets[k]: the session to open to see version k.
export function versions(byId, id, index) {
  const key = anchor(byId, id, index);
  const groups = new Map(); // author -> {created, latest}
  for (const session of byId.values()) {
    const has = session.id === id || session.message_count > index;
    if (!has || anchor(byId, session.id, index) !== key) continue;
    const owner = author(byId, session.id, index);
    const group = groups.get(owner);
    const created = byId.get(owner)?.created ?? session.created;
    if (!group) groups.set(owner, { owner, created, latest: session });
    else if (session.updated > group.latest.updated) group.latest = session;
  }
  if (groups.size < 2) return null;
  const ordered = [...groups.values()].sort((a, b) =>
    a.created.localeCompare(b.created) || a.owner.localeCompare(b.owner));
  const mine = author(byId, id, index);
  return {
    position: ordered.findIndex((group) => group.owner === mine),
    total: ordered.length,
    targets: ordered.map((group) => (group.owner === mine ? id : group.latest.id)),
  };
}

// A conversation and all its branches, for the sidebar: the topmost ancestor still
// present heads it, and it is as recent as its most recently used session.
export function families(details) {
  const byId = indexSessions(details);
  const heads = new Map(); // head id -> {head, members, latest}
  for (const session of details) {
    let head = session;
    while (head.parent && byId.has(head.parent)) head = byId.get(head.parent);
    const family = heads.get(head.id) ?? { head, members: [], latest: session };
    family.members.push(session);
    if (session.updated > family.latest.updated) family.latest = session;
    heads.set(head.id, family);
  }
  return [...heads.values()].sort((a, b) => b.latest.updated.localeCompare(a.latest.updated));
}
