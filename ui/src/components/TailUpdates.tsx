import { useEffect } from 'react';
import { wsUrl } from '../api/client';
import { ReconnectingSocket } from '../lib/socket';
import { adminSessionExpired, parseTailMessage, tailEvent } from '../store/actions';
import { useAppDispatch, useAppSelector, useAppStore } from '../store';
import { setTailConnection, splitList } from '../store/explorerSlice';

/**
 * Keeps `WS /api/admin/live?token=&types=&keys=` open while the explorer is on screen. After a
 * reconnect it asks to resume after the last event it saw (`from_seq`), so the tail has no gap.
 */
export function TailUpdates() {
  const token = useAppSelector((s) => s.explorer.auth.token);
  const { types, keys } = useAppSelector((s) => s.explorer.tail.filter);
  const dispatch = useAppDispatch();
  const store = useAppStore();

  useEffect(() => {
    if (!token) return;
    const socket = new ReconnectingSocket({
      url: () => {
        const last = store.getState().explorer.tail.lastSeq;
        return wsUrl('/admin/live', {
          token,
          types: splitList(types).join(','),
          keys: splitList(keys).join(','),
          from_seq: last > 0 ? last + 1 : undefined,
        });
      },
      onConnecting: () => dispatch(setTailConnection(store.getState().explorer.tail.lastSeq > 0 ? 'reconnecting' : 'connecting')),
      onOpen: () => dispatch(setTailConnection('live')),
      onMessage: (data) => {
        const e = parseTailMessage(data);
        if (e) dispatch(tailEvent(e));
      },
      onClose: () => dispatch(setTailConnection('reconnecting')),
      onAuthFailure: () => dispatch(adminSessionExpired()),
    });
    socket.start();
    return () => {
      socket.stop();
      dispatch(setTailConnection('offline'));
    };
  }, [token, types, keys, dispatch, store]);
  return null;
}
