import { describe, expect, it } from 'vitest';
import { checkSignup } from './SignupPage';

describe('sign-up checks', () => {
  it('accepts sensible names and passwords', () => {
    expect(checkSignup('ann.lee_2', 'correct-horse')).toEqual({});
  });
  it('explains what is wrong', () => {
    expect(checkSignup('', '')).toEqual({ username: 'Choose a username.', password: 'Choose a password.' });
    expect(checkSignup('a b', 'short').username).toMatch(/3 to 32 letters/);
    expect(checkSignup('ab', 'longenough').username).toMatch(/3 to 32/);
    expect(checkSignup('ann', 'short').password).toBe('Use at least 8 characters.');
    expect(checkSignup('ann', 'x'.repeat(129)).password).toBe('Use at most 128 characters.');
  });
});
