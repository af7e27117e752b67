package agent

// SetResolver makes a resolves the manager's host names with r (tests).
func SetResolver(a *Agent, r Resolver) { a.resolver = r }
