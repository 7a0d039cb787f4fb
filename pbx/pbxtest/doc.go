// Package pbxtest is the test support both drivers' suites share: an event recorder, a slow consumer, Run/RunPassive starters and the passive-replica scenarios.
// Only _test.go files import it, never production code; it speaks the pbx contract alone — no driver internals, no emulator, no controller.
package pbxtest
