import { useEffect, useState } from 'react';
import { useAppDispatch } from '../store';
import { createAppAsyncThunk } from '../store/thunk';

/** Where the platform's explorer is: the bank says (`GET /api/explorer`); null when it does not. */
export const fetchExplorerUrl = createAppAsyncThunk('platform/explorerUrl', async (_: void, { extra }) => {
  try {
    return await extra.api.explorerUrl();
  } catch {
    return null;
  }
});

/**
 * A link to the operators' explorer, which runs on its own address (it is the platform's, not
 * the bank's). Nothing when the bank was not told where it is.
 */
export function ExplorerLink({ children }: { children: string }) {
  const dispatch = useAppDispatch();
  const [url, setUrl] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    void dispatch(fetchExplorerUrl()).then((r) => live && setUrl(typeof r.payload === 'string' ? r.payload : null));
    return () => {
      live = false;
    };
  }, [dispatch]);
  if (!url) return null;
  return <a href={url}>{children}</a>;
}
