// Package directory is the people: users and their published numbers,
// contacts, API tokens and bearer-token sign-in. It places no call and
// knows no conversation.
package directory
