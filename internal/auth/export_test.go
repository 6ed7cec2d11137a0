package auth

// ThrottleSize is the number of entries in the login throttle's table.
func (s *Service) ThrottleSize() int { return s.throttle.size() }
