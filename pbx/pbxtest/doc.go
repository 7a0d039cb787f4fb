// Package pbxtest is the test support both drivers' suites share: recorder, slow consumer, starters, passive scenarios.
// Only _test.go files import it, never production code; it speaks the pbx contract, no driver's internals.
package pbxtest
