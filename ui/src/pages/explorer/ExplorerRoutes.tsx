import { Navigate, Route, Routes } from 'react-router';
import BrowsePage from './BrowsePage';
import ExplorerLayout from './ExplorerLayout';
import ExplorerLoginPage from './ExplorerLoginPage';
import KeyHistoryPage from './KeyHistoryPage';
import LiveTailPage from './LiveTailPage';
import ParkedPage from './ParkedPage';
import ServicesPage from './ServicesPage';
import TracePage from './TracePage';

/** Everything under /explorer. */
export default function ExplorerRoutes() {
  return (
    <Routes>
      <Route path="login" element={<ExplorerLoginPage />} />
      <Route element={<ExplorerLayout />}>
        <Route index element={<Navigate to="live" replace />} />
        <Route path="live" element={<LiveTailPage />} />
        <Route path="events" element={<BrowsePage />} />
        <Route path="keys" element={<KeyHistoryPage />} />
        <Route path="keys/:key" element={<KeyHistoryPage />} />
        <Route path="trace" element={<TracePage />} />
        <Route path="trace/:correlation" element={<TracePage />} />
        <Route path="services" element={<ServicesPage />} />
        <Route path="parked" element={<ParkedPage />} />
        <Route path="*" element={<Navigate to="live" replace />} />
      </Route>
    </Routes>
  );
}
