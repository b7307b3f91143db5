import { useEffect } from 'react';
import { wsUrl } from '../api/client';
import { ReconnectingSocket } from '../lib/socket';
import { liveMessage, parseLiveMessage, sessionExpired } from '../store/actions';
import { useAppDispatch, useAppSelector } from '../store';
import { liveActions } from '../store/liveSlice';
import { checkSession, resync } from '../store/liveThunks';

/** Keeps `WS /api/live?token=` open while a customer is logged in. Renders nothing. */
export function LiveUpdates() {
  const token = useAppSelector((s) => s.auth.token);
  const dispatch = useAppDispatch();
  useEffect(() => {
    if (!token) return;
    const socket = new ReconnectingSocket({
      url: () => wsUrl('/live', { token }),
      onConnecting: () => dispatch(liveActions.connecting()),
      onOpen: () => {
        dispatch(liveActions.opened());
        void dispatch(resync());
      },
      onMessage: (data) => {
        const m = parseLiveMessage(data);
        if (m) dispatch(liveMessage(m));
      },
      onClose: ({ retryInMs, opened }) => {
        dispatch(liveActions.closed({ retryInMs, now: Date.now() }));
        if (!opened) void dispatch(checkSession());
      },
      onAuthFailure: () => dispatch(sessionExpired()),
    });
    socket.start();
    return () => {
      socket.stop();
      dispatch(liveActions.stopped());
    };
  }, [token, dispatch]);
  return null;
}
