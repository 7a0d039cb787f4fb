// Package audit is the audit log: its actions, entries, the throttle on
// failed sign-ins, and the admins' queries and export. It records what the
// other parts tell it and decides nothing about them; it reads and writes
// the store only.
package audit
